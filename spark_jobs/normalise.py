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


def with_canonical_phones(df: DataFrame, columns: dict[str, str], region: str = "CN") -> DataFrame:
    """Add `columns[raw] = canonical` E.164 phone columns. phonenumbers runs once per distinct raw
    value (after stripping separators in Spark), not once per row."""
    to_e164 = _phone_udf(region)
    out = df
    for raw_col, out_col in columns.items():
        key = f"__{out_col}_key"
        out = out.withColumn(key, F.regexp_replace(F.trim(F.col(raw_col)), r"[\s\-().]", ""))
        lookup = (
            out.select(key).where(F.col(key).isNotNull() & (F.length(key) > 0)).distinct()
            .withColumn(out_col, to_e164(F.col(key)))
        )
        out = out.join(lookup, on=key, how="left").drop(key)
    return out
