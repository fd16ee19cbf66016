"""Survivorship and the golden record on hand-made rows, on every engine."""

import datetime as dt

import pytest

from spark_jobs.config import ProfilesConfig, Survivorship
from spark_jobs.profiles import build_observations, build_profiles, build_survivors

AS_OF = dt.date(2026, 11, 30)
IDS = "person_id string, id_type string, id_value string, source string, records long, first_seen timestamp, last_seen timestamp"
CONTACTS = ("person_id string, source string, updated_at timestamp, name string, gender string, birthday date, "
            "city string, tier string")


def _t(day: int) -> dt.datetime:
    return dt.datetime(2026, 11, day, 4, 0)


def _world(spark):
    ids = spark.createDataFrame([
        ("p1", "phone", "+8613000000001", "crm", 1, _t(1), _t(1)),
        ("p1", "phone", "+8613000000002", "app_events", 10, _t(2), _t(5)),
        ("p1", "phone", "+8613000000003", "orders", 3, _t(1), _t(3)),
        ("p1", "device_id", "DEV-1", "app_events", 10, _t(2), _t(5)),
        ("p2", "phone", "+8613000000009", "pos", 1, _t(4), _t(4)),
        ("p2", "phone", "+8613000000008", "pos", 1, _t(4), _t(4)),  # a tie: the smaller value wins
    ], IDS)
    contacts = spark.createDataFrame([
        ("p1", "crm", dt.datetime(2026, 9, 1), "Ann", "F", dt.date(1990, 6, 15), "北京", "gold"),
        ("p1", "crm", dt.datetime(2026, 10, 1), "Ann Li", "F", dt.date(1990, 6, 15), "北京", "gold"),
        ("p1", "crm", dt.datetime(2026, 10, 5), None, "M", dt.date(1990, 6, 15), "上海", "platinum"),
    ], CONTACTS)
    return ids, contacts


def _winners(spark, cfg: ProfilesConfig) -> dict:
    ids, contacts = _world(spark)
    rows = build_survivors(build_observations(contacts, ids), cfg).collect()
    return {(r.person_id, r.attribute): (r.value, r.source) for r in rows}


def _cfg(**rules) -> ProfilesConfig:
    base = dict(ProfilesConfig().survivorship)
    return ProfilesConfig(survivorship={**base, **rules})


@pytest.mark.parametrize(("rule", "sources", "phone"), [
    ("source_priority", None, ("+8613000000001", "crm")),  # crm first in the default order
    ("source_priority", ("orders", "app_events"), ("+8613000000003", "orders")),
    ("most_recent", None, ("+8613000000002", "app_events")),
    ("most_frequent", None, ("+8613000000002", "app_events")),  # 10 records
])
def test_build_survivors_phone_by_each_rule(spark, rule, sources, phone):
    got = _winners(spark, _cfg(phone=Survivorship(rule=rule, sources=sources)))
    assert got[("p1", "phone")] == phone
    if sources is None:
        assert got[("p2", "phone")] == ("+8613000000008", "pos")  # ties: newest, then smallest value
    else:
        assert ("p2", "phone") not in got  # pos is not a listed source


def test_build_survivors_contact_fields_recent_versus_frequent(spark):
    got = _winners(spark, _cfg(city=Survivorship(rule="most_recent"), tier=Survivorship(rule="most_frequent"),
                               gender=Survivorship(rule="most_frequent")))
    assert got[("p1", "city")] == ("上海", "crm")
    assert got[("p1", "tier")] == ("gold", "crm")  # 2 versions of 3
    assert got[("p1", "gender")] == ("F", "crm")
    assert got[("p1", "name")] == ("Ann Li", "crm")  # the newest version has no name: NULL never wins
    assert ("p2", "name") not in got


def test_build_profiles_golden_record_and_derived_columns(spark):
    ids, contacts = _world(spark)
    survivors = build_survivors(build_observations(contacts, ids), ProfilesConfig())
    registered = spark.createDataFrame([("p1", dt.datetime(2024, 1, 1))], "person_id string, registered_at timestamp")
    rows = {r.person_id: r for r in build_profiles(ids, survivors, AS_OF, "Asia/Shanghai", registered).collect()}
    p1, p2 = rows["p1"], rows["p2"]
    assert (p1.phone, p1.phone_source, p1.city, p1.name) == ("+8613000000001", "crm", "上海", "Ann Li")
    assert p1.age == 36 and p1.birthday == dt.date(1990, 6, 15)
    assert p1.first_seen == dt.datetime(2024, 1, 1)  # the CRM registration is the earliest evidence
    assert p1.tenure_days == (AS_OF - dt.date(2024, 1, 1)).days
    assert p1.channels == "app_events,crm,orders" and p1.identifiers == 4
    assert (p2.name, p2.age, p2.channels, p2.identifiers, p2.as_of) == (None, None, "pos", 2, AS_OF)


def test_profiles_config_rejects_a_source_that_never_carries_the_attribute():
    with pytest.raises(ValueError, match="city: source\\(s\\) \\['pos'\\] never carry it"):
        _cfg(city=Survivorship(rule="most_recent", sources=("pos",)))
