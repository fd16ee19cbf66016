"""conf/tags.yaml and conf/segments.yaml: every mistake is a ConfigError at load time naming the file, the
tag or segment, and the problem; the shipped files load."""

import textwrap

import pytest

from spark_jobs import rules
from spark_jobs.config import ConfigError, load_config
from spark_jobs.tag_config import check_rule, load_segments, load_tags

BASE = """
tags:
  - {name: gender, kind: attribute, column: gender}
  - {name: events_7d, kind: stat, source: events, agg: count, window_days: 7}
  - {name: spend_30d, kind: stat, source: orders, agg: sum, column: amount, window_days: 30}
"""


def _tags(tmp_path, extra: str):
    path = tmp_path / "tags.yaml"
    path.write_text(BASE + textwrap.indent(textwrap.dedent(extra), "  "))
    return path


@pytest.mark.parametrize(("extra", "tag", "problem"), [
    ("- {name: r1, kind: rule, expr: 'nope > 1'}", "r1", "unknown tag 'nope'"),
    ("- {name: r1, kind: rule, expr: \"gender > 3\"}", "r1", "type mismatch in `gender > 3`: string compared with long"),
    ("- {name: a, kind: rule, expr: 'b'}\n- {name: b, kind: rule, expr: 'not a'}", "a|b", "rules form a cycle"),
    ("- {name: r1, kind: rule, expr: 'events_7d and spend_30d > 1'}", "r1", "each side of AND/OR must be boolean, got long"),
    ("- {name: r1, kind: rule, expr: 'events_7d >'}", "r1", "cannot parse"),
    ("- {name: r1, kind: rule, expr: \"upper(gender) = 'F'\"}", "r1", "is not supported in rules"),
    ("- name: r1\n  kind: rule\n  cases: [{when: 'events_7d > 1', then: 1}, {when: 'events_7d > 0', then: x}]",
     "r1", "mixes types"),
    ("- {name: s1, kind: stat, source: orders, agg: sum, column: amountx}", "s1", "unknown column 'amountx' of source orders"),
    ("- {name: s1, kind: stat, source: orders, agg: sum, column: category}", "s1", "needs a numeric column"),
    ("- {name: s1, kind: stat, source: events, agg: count, where: {colour: [red]}}", "s1", "unknown column 'colour'"),
    ("- {name: s1, kind: stat, source: events, agg: count, window_days: 0}", "s1", "greater than or equal to 1"),
    ("- {name: a1, kind: attribute, column: city, bins: [1, 2]}", "a1", "bins need a numeric column"),
    ("- {name: a1, kind: attribute, column: age, bins: [30, 20]}", "a1", "strictly ascending"),
    ("- {name: a1, kind: attribute, column: shoe_size}", "a1", "unknown profile column 'shoe_size'"),
    ("- {name: gender, kind: attribute, column: city}", "gender", "declared twice"),
    ("- {name: m1, kind: magic}", "m1", "kind"),
    ("- name: rfm\n  kind: rfm\n  segments: [{name: top, when: 'recency >= 4 and loyalty > 1'}]", "rfm",
     "segment top: unknown tag 'loyalty'"),
])
def test_load_tags_names_the_file_the_tag_and_the_problem(tmp_path, extra, tag, problem):
    path = _tags(tmp_path, extra)
    with pytest.raises(ConfigError) as err:
        load_tags(path)
    message = str(err.value)
    assert message.startswith(str(path))
    assert any(f"'{t}'" in message for t in tag.split("|")), message
    assert problem in message, message


def _segments(tmp_path, rule: str, more: str = ""):
    path = tmp_path / "segments.yaml"
    path.write_text(f"segments:\n  - {{name: s1, rule: \"{rule}\"}}\n{more}")
    return path


@pytest.mark.parametrize(("rule", "problem"), [
    ("events_7d", "must be a condition"),
    ("event_count('buy_now', 7) > 1", "unknown event 'buy_now'"),
    ("event_count('add_cart', 0) > 1", "days must be a whole number of at least 1"),
    ("order_count('7') > 1", "days must be a whole number"),
    ("visits(7) > 1", "unknown function 'visits'"),
    ("nope = 1", "unknown tag 'nope'"),
])
def test_load_segments_names_the_file_the_segment_and_the_problem(tmp_path, rule, problem):
    tags = load_tags(_tags(tmp_path, ""))
    path = _segments(tmp_path, rule)
    with pytest.raises(ConfigError) as err:
        load_segments(path, tags)
    assert str(err.value).startswith(f"{path}: segment 's1': ") and problem in str(err.value), str(err.value)


def test_load_segments_rejects_a_name_declared_twice(tmp_path):
    tags = load_tags(_tags(tmp_path, ""))
    path = _segments(tmp_path, "events_7d > 1", "  - {name: s1, rule: 'spend_30d > 0'}\n")
    with pytest.raises(ConfigError, match="declared twice"):
        load_segments(path, tags)


def test_load_config_reports_the_tags_file_not_cdp_yaml(tmp_path):
    (tmp_path / "tags.yaml").write_text("tags:\n  - {name: r1, kind: rule, expr: 'x > 1'}\n")
    conf = tmp_path / "cdp.yaml"
    conf.write_text(f"paths: {{tags: {tmp_path / 'tags.yaml'}}}\n")
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'tags.yaml'}: tag 'r1': unknown tag 'x'"):
        load_config(conf, env={})


def test_the_shipped_tags_and_segments_load_with_types_and_rule_order():
    cfg = load_config(env={})
    assert cfg.tags.types["rfm_segment"] == "string" and cfg.tags.types["high_value_at_risk"] == "boolean"
    assert cfg.tags.types["value_tier"] == "string" and cfg.tags.types["churn_score"] == "double"
    assert set(cfg.tags.rule_order) == {t.name for t in cfg.tags.tags if t.kind == "rule"}
    assert {s.name for s in cfg.segments.segments} >= {"cart_abandoners", "high_value_at_risk"}


@pytest.mark.parametrize(("text", "expected"), [
    ("a + b", "double"), ("a * 2", "long"), ("a / 2", "double"), ("case when f then 'x' else null end", "string"),
    ("a between 1 and 3", "boolean"), ("d >= '2026-11-01'", "boolean"), ("s in ('x', 'y') or not f", "boolean"),
    ("s is not null", "boolean"), ("coalesce(a, 0)", "long"), ("if(f, a, b)", "double"), ("-a", "long"),
])
def test_infer_types(text, expected):
    types = {"a": "long", "b": "double", "s": "string", "f": "boolean", "d": "date"}
    assert rules.infer(rules.parse(text), types) == expected


def test_check_rule_rewrites_behaviour_calls_to_columns():
    rule = check_rule("event_count('add_cart', 7) >= 2 and order_count(7) = 0", {})
    sql = rule.sql({rules.call_key(c): f"c{i}" for i, c in enumerate(rule.calls())})
    assert sql == "`c0` >= 2 AND `c1` = 0"
