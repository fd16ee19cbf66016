"""conf/analytics.yaml checks (spark_jobs/analytics/config.py): each mistake is a ConfigError naming the
file, the analysis and the problem, raised when config loads."""

from __future__ import annotations

import pytest
import yaml

from spark_jobs.analytics.config import load_analytics
from spark_jobs.config import ConfigError, PathsConfig, load_config

TAGS = {"city_tier": "string", "lifecycle_stage": "string", "orders_30d": "long", "value_tier": "string"}
SEGMENTS = {"champions", "cart_abandoners"}


def _load(tmp_path, data: dict):
    path = tmp_path / "analytics.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return load_analytics(path, TAGS, SEGMENTS), path


@pytest.mark.parametrize("data, message", [
    ({"metrics": [{"name": "m", "kind": "people", "source": "events", "dimensions": ["colour"]}]},
     "metric 'm': dimensions: unknown dimension 'colour'"),
    ({"metrics": [{"name": "m", "kind": "count", "source": "orders", "dimensions": ["orders_30d"]}]},
     "metric 'm': dimensions: tag 'orders_30d' is long: group by string tags only"),
    ({"metrics": [{"name": "m", "kind": "sum", "source": "orders", "column": "channel"}]},
     "metric 'm': column: sum needs a numeric column; channel is string"),
    ({"metrics": [{"name": "m", "kind": "avg", "source": "orders"}]}, "metric 'm'"),
    ({"metrics": [{"name": "r", "kind": "ratio", "numerator": "gmv", "denominator": "orders"}]},
     "metric 'r': numerator: unknown metric 'gmv'"),
    ({"metrics": [{"name": "orders", "kind": "count", "source": "orders"},
                  {"name": "r", "kind": "ratio", "numerator": "orders", "denominator": "orders", "dimensions": ["channel"]}]},
     "metric 'r': dimension(s) ['channel'] are not dimensions of its numerator 'orders'"),
    ({"metrics": [{"name": "m", "kind": "people", "source": "events", "where": {"amount": ["1"]}}]},
     "metric 'm': where: unknown column 'amount' of source events"),
    ({"funnels": [{"name": "f", "steps": ["view_item", "checkout"]}]}, "funnel 'f': steps: unknown event(s) ['checkout']"),
    ({"funnels": [{"name": "f", "steps": ["view_item", "view_item"]}]}, "funnel 'f': steps: an event may be one step only"),
    ({"funnels": [{"name": "f", "steps": ["view_item"]}]}, "funnel 'f': steps:"),
    ({"funnels": [{"name": "f", "steps": ["view_item", "add_cart"], "window_days": 0}]}, "funnel 'f': window_days:"),
    ({"funnels": [{"name": "f", "steps": ["view_item", "add_cart"], "order": "loose"}]}, "funnel 'f': order:"),
    ({"retention": [{"name": "r", "return_actions": ["purchase"]}]}, "retention 'r': return_actions: unknown action(s) ['purchase']"),
    ({"retention": [{"name": "r", "period": "month"}]}, "retention 'r': period:"),
    ({"transitions": [{"name": "t", "kind": "tag", "tag": "orders_30d"}]}, "transition 't': tag 'orders_30d' is long"),
    ({"transitions": [{"name": "t", "kind": "segments", "segments": ["vip"]}]}, "transition 't': unknown segment(s) ['vip']"),
    ({"transitions": [{"name": "t", "kind": "tag"}]}, "transition 't': kind tag needs `tag`"),
    ({"funnels": [{"name": "f", "steps": ["view_item", "add_cart"]}, {"name": "f", "steps": ["view_item", "add_cart"]}]},
     "funnels: ['f'] declared twice"),
    ({"alerts": {"level": 99, "critical_level": 95}}, "critical_level 95.0 must be above level 99.0"),
    ({"alerts": {"min_history_days": 30, "history_days": 20}}, "history_days 20 must be more than min_history_days 30"),
    ({"reports": {}}, "reports: Extra inputs are not permitted"),
])
def test_load_analytics_names_the_file_the_analysis_and_the_problem(tmp_path, data, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data)
    assert str(err.value).startswith(str(tmp_path / "analytics.yaml")) and message in str(err.value), str(err.value)


def test_load_analytics_accepts_tag_and_column_dimensions_and_lists_the_tags_read(tmp_path):
    cfg, _ = _load(tmp_path, {
        "metrics": [{"name": "buyers", "kind": "people", "source": "orders", "dimensions": ["channel", "city_tier"]},
                    {"name": "active", "kind": "people", "source": "activity", "dimensions": ["lifecycle_stage"]},
                    {"name": "conv", "kind": "ratio", "numerator": "buyers", "denominator": "active"}],
        "funnels": [{"name": "f", "steps": ["mp_view_item", "mp_pay"], "dimensions": ["appid", "value_tier"]}],
    })
    assert cfg.tags_read() == {"city_tier", "lifecycle_stage", "value_tier"}
    assert cfg.alerts.min_history_days == 14 and cfg.funnels[0].order == "strict"


def test_load_config_raises_the_analytics_files_own_error(tmp_path):
    bad = tmp_path / "analytics.yaml"
    bad.write_text(yaml.safe_dump({"funnels": [{"name": "f", "steps": ["view_item", "nope"]}]}))
    conf = tmp_path / "cdp.yaml"
    conf.write_text(yaml.safe_dump({"paths": {"analytics": str(bad)}}))
    with pytest.raises(ConfigError, match=r"analytics\.yaml: funnel 'f': steps: unknown event"):
        load_config(conf, env={})


def test_load_config_refuses_analyses_inside_cdp_yaml(tmp_path):
    conf = tmp_path / "cdp.yaml"
    conf.write_text(yaml.safe_dump({"analytics": {"metrics": []}}))
    with pytest.raises(ConfigError, match="paths.analytics"):
        load_config(conf, env={})


def test_paths_config_points_at_the_project_analytics_file():
    assert PathsConfig().file("analytics").name == "analytics.yaml"
