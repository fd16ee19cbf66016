"""Every column of every table contract has a PII class; a new column without one fails, naming it."""

from __future__ import annotations

import pytest

from spark_jobs.contracts import CONTRACTS, Column, TableContract
from spark_jobs.privacy.classes import (
    CLASSES,
    UnclassifiedColumnError,
    column_class,
    pii_columns,
    table_classes,
    unclassified,
)


def test_every_contract_column_declares_a_pii_class():
    missing = unclassified()
    assert not missing, (
        f"{len(missing)} column(s) without a PII class: {', '.join(missing)}. Declare each in "
        "spark_jobs/privacy/classes.py (BY_TABLE for the table, or BY_NAME); classes: " + ", ".join(CLASSES))


def test_a_new_column_without_a_class_fails_naming_table_and_column():
    t = TableContract("gold_example", (Column("person_id", "string"), Column("favourite_colour", "string")))
    assert unclassified({t.name: t}) == ["gold_example.favourite_colour"]
    with pytest.raises(UnclassifiedColumnError, match=r"gold_example\.favourite_colour.*BY_TABLE"):
        table_classes(t)


def test_direct_identifiers_are_classified_where_they_live():
    assert column_class("bronze_crm", "phone") == "phone" and column_class("bronze_pos", "member_phone") == "phone"
    assert column_class("gold_profiles", "email") == "email" and column_class("silver_events", "unionid") == "wechat_id"
    assert column_class("gold_id_map", "id_value") == "identifier"
    assert column_class("bronze_quarantine", "raw") == "free_text"
    assert column_class("ops_dq_results", "unexpected_examples") == "free_text"  # a failed check's bad values
    assert column_class("gold_consent", "status") == "consent"
    assert "phone_source" not in pii_columns(CONTRACTS["gold_profiles"])  # the name of a source, not a value


def test_every_class_used_is_a_declared_class():
    from spark_jobs.privacy.classes import BY_NAME, BY_TABLE

    used = set(BY_NAME.values()) | {c for cols in BY_TABLE.values() for c in cols.values()}
    assert used <= set(CLASSES)


def test_cdp_table_describe_shows_each_columns_class():
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    out = CliRunner().invoke(app, ["table", "describe", "gold_profiles"])
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if ln.strip().startswith("phone "))
    assert line.split()[:3] == ["phone", "string", "phone"]
    assert "personal data: " in out.output and "birthday:" in out.output
    bad = CliRunner().invoke(app, ["table", "describe", "gold_nothing"])
    assert bad.exit_code != 0 and "unknown table 'gold_nothing'" in bad.output


def test_columns_made_from_config_take_their_tables_class():
    from spark_jobs.contracts import features_contract, profile_tags_contract

    tags = table_classes(profile_tags_contract({"home_city": "string", "orders_30d": "long"}))
    assert tags == {"person_id": "person_id", "as_of": "none", "home_city": "free_text", "orders_30d": "free_text"}
    assert table_classes(features_contract({"orders_90d": "long"}))["orders_90d"] == "none"
