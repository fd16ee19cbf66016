"""Keyed tokens and ad-platform hashes, against hashlib/hmac computed by hand per platform convention."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.privacy.tokens import (
    TokenKeyError,
    email_col,
    hash_col,
    normalise_email,
    normalise_phone,
    phone_col,
    platform_hash,
    token,
    token_col,
)

KEY = "k" * 32
PHONE = "+8613912345678"


def _sha256(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def test_token_is_hmac_sha256_under_the_key():
    assert token(PHONE, KEY) == hmac.new(KEY.encode(), PHONE.encode(), hashlib.sha256).hexdigest()
    assert token(PHONE, KEY) != token(PHONE, "x" * 32) != _sha256(PHONE)  # keyed: not the plain hash
    assert token(None, KEY) is None


@pytest.mark.parametrize("key", [None, "", "short"])
def test_check_key_refuses_a_missing_or_short_key(key):
    with pytest.raises(TokenKeyError, match="token key"):
        token(PHONE, key)


def test_token_col_equals_python_hmac_on_the_engine(sail):
    long_key = "L" * 100  # longer than SHA-256's block: hashed first, as RFC 2104 says
    values = [PHONE, "张三@例子.cn", "", None]
    df = sail.createDataFrame([(v,) for v in values], T.StructType([T.StructField("v", T.StringType())]))
    got = df.select(token_col(F.col("v"), KEY).alias("a"), token_col(F.col("v"), long_key).alias("b")).collect()
    assert [r["a"] for r in got] == [token(v, KEY) for v in values]
    assert [r["b"] for r in got] == [token(v, long_key) for v in values]


# Each platform's documented form of +86 139 1234 5678 and " Li.Lei@Example.COM ".
PLATFORM_CASES = {
    "google": ("e164", "sha256", "+8613912345678"),
    "meta": ("digits", "sha256", "8613912345678"),
    "tencent_ads_md5": ("national", "md5", "13912345678"),
    "tencent_ads_sha256": ("national", "sha256", "13912345678"),
    "ocean_engine": ("national", "sha256", "13912345678"),
}


@pytest.mark.parametrize("case", sorted(PLATFORM_CASES))
def test_platform_phone_hash_matches_hand_computed_hashlib(case):
    fmt, algorithm, normalised = PLATFORM_CASES[case]
    assert normalise_phone(PHONE, fmt) == normalised
    assert platform_hash(normalise_phone(PHONE, fmt), algorithm) == hashlib.new(algorithm, normalised.encode()).hexdigest()


def test_email_is_trimmed_and_lower_cased_before_hashing():
    assert normalise_email(" Li.Lei@Example.COM ") == "li.lei@example.com"
    assert platform_hash(normalise_email(" Li.Lei@Example.COM "), "sha256") == _sha256("li.lei@example.com")
    assert normalise_email("   ") is None


def test_national_format_leaves_out_numbers_of_other_countries():
    assert normalise_phone("+14155550100", "national") is None
    assert normalise_phone("+14155550100", "national", country_code="1") == "4155550100"


def test_column_versions_equal_the_python_ones(sail):
    rows = [(PHONE, " Li.Lei@Example.COM "), ("+14155550100", None)]
    df = sail.createDataFrame(rows, "phone string, email string")
    out = df.select(
        *[hash_col(phone_col(F.col("phone"), fmt), alg).alias(name) for name, (fmt, alg, _) in PLATFORM_CASES.items()],
        hash_col(email_col(F.col("email")), "sha256").alias("email"),
    ).collect()
    for (phone, email), r in zip(rows, out, strict=True):
        for name, (fmt, alg, _) in PLATFORM_CASES.items():
            assert r[name] == platform_hash(normalise_phone(phone, fmt), alg), name
        assert r["email"] == platform_hash(normalise_email(email), "sha256")


def test_cdp_token_key_creates_an_owner_only_key_once_and_token_key_reads_it(tmp_path):
    import stat

    from typer.testing import CliRunner

    from spark_jobs.cli import app
    from spark_jobs.privacy.suppression import token_key

    path = tmp_path / "secrets" / "token.key"
    first = CliRunner().invoke(app, ["token-key", "--file", str(path)])
    assert first.exit_code == 0 and "created" in first.output and f"CDP_TOKEN_KEY_FILE={path}" in first.output
    key = path.read_text().strip()
    assert len(bytes.fromhex(key)) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CliRunner().invoke(app, ["token-key", "--file", str(path)])
    assert again.exit_code == 0 and "kept the existing" in again.output and path.read_text().strip() == key  # never rotated
    assert token_key({"CDP_TOKEN_KEY_FILE": str(path)}) == key.encode()
    path.write_text("short\n")  # a file that is not a usable key is refused, not kept silently
    bad = CliRunner().invoke(app, ["token-key", "--file", str(path)])
    assert bad.exit_code != 0 and "5 bytes" in bad.output
