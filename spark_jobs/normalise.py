"""Canonical forms of identifiers (phone E.164, email, device id), as plain functions and Spark columns; no I/O."""

from __future__ import annotations

import functools
import re

import pandas as pd
import phonenumbers
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# A pragmatic address check: one @, no spaces, a dot in the domain. Deliverability is not ours to judge.
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_EMAIL = re.compile(EMAIL_RE)


@functools.lru_cache(maxsize=1 << 20)
def canonical_phone(raw: str | None, region: str = "CN") -> str | None:
    """E.164 form of a phone number (`+8613912345678`), or None when it is not a valid number."""
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def canonical_email(raw: str | None) -> str | None:
    """Lower-cased, trimmed address, or None when it is not shaped like one."""
    if raw is None:
        return None
    text = raw.strip().lower()
    return text if _EMAIL.match(text) else None


def canonical_device_id(raw: str | None) -> str | None:
    """Upper-cased, trimmed device id, or None when empty."""
    if raw is None:
        return None
    text = raw.strip().upper()
    return text or None


def email_col(c: Column) -> Column:
    """Spark twin of canonical_email."""
    text = F.lower(F.trim(c))
    return F.when(text.rlike(EMAIL_RE), text)


def device_id_col(c: Column) -> Column:
    """Spark twin of canonical_device_id."""
    text = F.upper(F.trim(c))
    return F.when(F.length(text) > 0, text)


def _phone_udf(region: str):
    @F.pandas_udf("string")
    def to_e164(raw: pd.Series) -> pd.Series:
        return raw.map(lambda r: canonical_phone(r, region))

    return to_e164


def _mobile_fast_path(key: Column, region: str) -> Column:
    """E.164 for the common case, a mobile number of `region` (optionally with its country code),
    matched in Spark with phonenumbers' own metadata pattern; NULL for everything else."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None or meta.mobile is None or not meta.mobile.national_number_pattern:
        return F.lit(None).cast("string")
    cc = str(meta.country_code)
    regex = rf"^(?:\+{cc}|00{cc}|{cc})?({meta.mobile.national_number_pattern})$"
    national = F.regexp_extract(key, regex, 1)
    return F.when(national != "", F.concat(F.lit(f"+{cc}"), national))


def with_canonical_phones(df: DataFrame, columns: dict[str, str], region: str = "CN") -> DataFrame:
    """Add `columns[raw] = canonical` E.164 phone columns. Mobile numbers of the default region are
    recognised in Spark by phonenumbers' metadata pattern; the rest go through phonenumbers itself,
    once per distinct value (after stripping separators), not once per row. Both give the same
    answer (a property test checks)."""
    to_e164 = _phone_udf(region)
    out = df
    for raw_col, out_col in columns.items():
        key, slow = f"__{out_col}_key", f"__{out_col}_slow"
        out = out.withColumn(key, F.regexp_replace(F.trim(F.col(raw_col)), r"[\s\-().]", ""))
        out = out.withColumn(out_col, _mobile_fast_path(F.col(key), region))
        lookup = (
            out.where(F.col(out_col).isNull() & (F.length(key) > 0)).select(key).distinct()
            .withColumn(slow, to_e164(F.col(key)))
        )
        out = (
            out.join(lookup, on=key, how="left")
            .withColumn(out_col, F.coalesce(F.col(out_col), F.col(slow)))
            .drop(key, slow)
        )
    return out
