"""The Great Expectations suites of the analysis marts and ops_alerts (expectations/suites.py) through the
real write gate on Sail: a good frame publishes, a crafted bad one is stopped with the expectation named."""

from __future__ import annotations

import datetime as dt

import pytest

from expectations.gate import QualityGate, QualityGateError
from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig
from tests.conftest import contract_frame

DAY = dt.date(2026, 11, 20)
GOOD = {
    "gold_metrics_daily": {"as_of": DAY, "metric": "aov", "kind": "ratio", "dimension": "total", "dimension_value": "total",
                           "value": 50.0, "numerator": 500.0, "denominator": 10.0},
    "gold_funnels": {"as_of": DAY, "funnel": "f", "cohort_date": DAY, "complete": False, "dimension": "total",
                     "dimension_value": "total", "step": 1, "step_name": "view_item", "people": 4, "conversion": 1.0,
                     "step_conversion": 1.0},
    "gold_retention": {"as_of": DAY, "retention": "r", "period": "week", "cohort": DAY, "cohort_people": 4, "period_n": 0,
                       "returned": 3, "rate": 0.75, "complete": False},
    "gold_transitions": {"as_of": DAY, "transition": "t", "from_date": DAY - dt.timedelta(days=1), "from_state": "new",
                         "to_state": "active", "people": 3, "share": 0.5},
    "ops_alerts": {"as_of": DAY, "metric": "m", "dimension": "total", "dimension_value": "total", "observed": 1.0,
                   "expected": 10.0, "lower": 8.0, "upper": 12.0, "level": 99.0, "severity": "critical", "direction": "drop",
                   "drill_down": "[]", "method": "ets", "history_days": 20, "run_id": "r"},
}
BAD = [
    ("gold_metrics_daily", {"denominator": None}, "ratios_have_a_denominator"),
    ("gold_metrics_daily", {"value": -1.0}, "expect_column_values_to_be_between(value)"),
    ("gold_funnels", {"conversion": 1.5}, "expect_column_values_to_be_between(conversion)"),
    ("gold_funnels", {"cohort_date": DAY + dt.timedelta(days=1)}, "cohort_date_not_after_as_of"),
    ("gold_retention", {"returned": 5, "rate": 1.0}, "returned_not_more_than_the_cohort"),
    ("gold_retention", {"period": "month"}, "expect_column_values_to_be_in_set(period)"),
    ("gold_transitions", {"from_date": DAY}, "from_date_before_as_of"),
    ("ops_alerts", {"observed": 10.0}, "observed_outside_the_interval"),
    ("ops_alerts", {"severity": "info"}, "expect_column_values_to_be_in_set(severity)"),
]


@pytest.fixture
def gate(sail, tmp_path):
    from spark_jobs.tables import Lakehouse

    cfg = CdpConfig(engine=EngineConfig(kind="local"), paths=PathsConfig(lakehouse=str(tmp_path / "lh")))
    lh = Lakehouse(sail, cfg.paths.lakehouse_uri())
    return sail, QualityGate(lh, cfg, "run", DAY)


@pytest.mark.parametrize("table", sorted(GOOD))
def test_suite_passes_a_good_frame(gate, table):
    sail, g = gate
    rows = g.check(table, contract_frame(sail, table, [GOOD[table]]), {"as_of": DAY})
    assert rows and all(r["success"] for r in rows)


@pytest.mark.parametrize("table, change, expectation", BAD)
def test_suite_stops_a_bad_frame_naming_the_expectation(gate, table, change, expectation):
    sail, g = gate
    with pytest.raises(QualityGateError) as err:
        g.check(table, contract_frame(sail, table, [{**GOOD[table], **change}]), {"as_of": DAY})
    assert f"{table} was not published" in str(err.value) and f"- {expectation}:" in str(err.value), str(err.value)
