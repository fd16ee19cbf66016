"""Property tests of the identifier normalisers, and their Spark twins on every engine."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_jobs.normalise import (
    canonical_device_id,
    canonical_email,
    canonical_phone,
    device_id_col,
    email_col,
    with_canonical_phones,
)

# Chinese mobile prefixes that phonenumbers knows as allocated (13x, 15x except 154, 18x, ...).
PREFIXES = ["130", "131", "135", "136", "137", "138", "139", "150", "151", "152", "157", "158", "159",
            "166", "177", "180", "181", "186", "187", "188", "189", "199"]
mobile = st.builds(lambda p, rest: p + rest, st.sampled_from(PREFIXES), st.from_regex(r"\A[0-9]{8}\Z"))
LAYOUTS = [
    lambda n: n, lambda n: f"{n[:3]} {n[3:7]} {n[7:]}", lambda n: f"{n[:3]}-{n[3:7]}-{n[7:]}",
    lambda n: f"+86 {n}", lambda n: f"0086{n}", lambda n: f"86-{n}", lambda n: f"+86-{n[:3]}-{n[3:7]}-{n[7:]}",
    lambda n: f"  {n} ", lambda n: f"(+86) {n}",
]


@settings(max_examples=300, deadline=None)
@given(mobile, st.sampled_from(range(len(LAYOUTS))))
def test_canonical_phone_every_layout_gives_the_same_e164(number, layout):
    assert canonical_phone(LAYOUTS[layout](number)) == "+86" + number


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=25))
def test_canonical_phone_is_idempotent_and_e164_or_none(raw):
    out = canonical_phone(raw)
    if out is not None:
        assert out.startswith("+") and out[1:].isdigit()
        assert canonical_phone(out) == out


def test_canonical_phone_rejects_non_numbers():
    assert canonical_phone(None) is None
    assert canonical_phone("") is None
    assert canonical_phone("unknown") is None
    assert canonical_phone("1391234567") is None  # one digit short


emails = st.emails()


@settings(max_examples=200, deadline=None)
@given(emails, st.sampled_from(["", " ", "  \t"]), st.booleans())
def test_canonical_email_is_lower_trimmed_and_idempotent(addr, pad, upper):
    raw = pad + (addr.upper() if upper else addr) + pad
    out = canonical_email(raw)
    assert out == addr.strip().lower()
    assert canonical_email(out) == out


def test_canonical_email_rejects_non_addresses():
    assert canonical_email("not-an-email") is None
    assert canonical_email("a b@c.com") is None
    assert canonical_email("  ") is None


@given(st.text(alphabet="0123456789abcdefABCDEF-", min_size=1, max_size=36))
def test_canonical_device_id_upper_and_idempotent(raw):
    out = canonical_device_id(f" {raw} ")
    assert out == raw.upper()
    assert canonical_device_id(out) == out


RAW = [" Ann@Example.COM ", "bad", None, "dev-1a", "  ", "139 1234 5678", "+86 139-1234-5678", "unknown"]


def test_spark_twins_match_python_normalisers(spark):
    df = spark.createDataFrame([(r,) for r in RAW], "raw string")
    got = with_canonical_phones(
        df.select("raw", email_col(df.raw).alias("email"), device_id_col(df.raw).alias("device")),
        {"raw": "phone"},
    ).collect()
    by_raw = {r.raw: r for r in got}
    assert len(got) == len(RAW)
    for raw in RAW:
        row = by_raw[raw]
        assert row.email == canonical_email(raw), raw
        assert row.device == canonical_device_id(raw), raw
        assert row.phone == canonical_phone(raw), raw


@pytest.mark.parametrize("region,raw,expected", [("CN", "13912345678", "+8613912345678"), ("US", "6502530000", "+16502530000")])
def test_canonical_phone_uses_the_default_region(region, raw, expected):
    assert canonical_phone(raw, region) == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.builds(lambda n, layout: LAYOUTS[layout](n), mobile, st.sampled_from(range(len(LAYOUTS)))),
    st.from_regex(r"\A\+?[0-9 ()-]{0,16}\Z"),
    st.sampled_from(["13800000000", "010-6552 9988", "+1 650 253 0000", "0139 1234 5678", "86 21 6123 4567", "154 1234 5678"]),
), min_size=1, max_size=40))
def test_with_canonical_phones_equals_phonenumbers(sail, raws):
    """The Spark fast path and the phonenumbers fallback together give exactly canonical_phone."""
    df = sail.createDataFrame([(i, r) for i, r in enumerate(raws)], "i int, raw string")
    got = {r.i: r.phone for r in with_canonical_phones(df, {"raw": "phone"}).collect()}
    assert got == {i: canonical_phone(r) for i, r in enumerate(raws)}
