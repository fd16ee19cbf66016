"""conf/sources.yaml's checks: errors name the source and the key to fix."""

import pytest
import yaml

from spark_jobs.config import ConfigError
from spark_jobs.sources.config import load_sources


def _load(tmp_path, **source):
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": {"shop": {"model": "orders", "format": "csv", **source}}}))
    return load_sources(path)


def test_record_key_defaults_to_the_models_and_may_be_declared(tmp_path):
    assert _load(tmp_path).get("shop").record_key() == ("order_id",)
    assert _load(tmp_path, key=["order_id", "paid_time"]).get("shop").record_key() == ("order_id", "paid_time")


@pytest.mark.parametrize(("key", "message"), [
    (["order_no"], r"key: \['order_no'\] are not fields of model 'orders'"),
    (["member_id"], r"key: \['member_id'\] may be empty in model 'orders'; a record key needs required fields"),
])
def test_load_sources_rejects_a_key_that_cannot_name_a_record(tmp_path, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        _load(tmp_path, key=key)
    assert "sources.yaml" in str(err.value) and "shop" in str(err.value)


def test_load_sources_rejects_an_expression_regex_the_engine_cannot_compile(tmp_path):
    expr = r"CASE WHEN category rlike 'shoe\\Z' THEN 'shoes' END"  # SQL text: the literal's \\ is one backslash
    with pytest.raises(ConfigError, match=r"fields\.category: regex `shoe\\Z`: `\\Z` is not supported by Sail") as err:
        _load(tmp_path, fields={"category": {"expr": expr}})
    assert "shop" in str(err.value)
