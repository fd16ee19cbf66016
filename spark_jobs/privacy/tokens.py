"""Keyed tokens and ad-platform hashing of identifiers (pure functions over values and Spark columns); no I/O.

Two different things, never to be mixed up:

- A **token** is HMAC-SHA-256 under the project's secret key: deterministic (joins and counts still work)
  but not computable by anyone without the key, so a dictionary of every Chinese mobile number does not
  reverse it. Downstream tables, logs and examples carry tokens instead of values.
- A **platform hash** is the plain, unkeyed SHA-256 (or MD5) of an identifier normalised exactly as an
  ad platform documents, so that the platform can match it against its own users. It is reversible by
  dictionary for phones: it goes to the platform in an export and nowhere else.

Normalisation per platform, from their documentation:
- Google Ads Customer Match: e-mail trimmed and lower-cased; phone in E.164 *with* the `+` and country code
  (`+8613912345678`); SHA-256, hex.
- Meta (custom audiences from a customer list): e-mail trimmed and lower-cased; phone as digits only,
  with the country code, no `+`, no leading zeros (`8613912345678`); SHA-256, hex.
- Tencent Ads (腾讯广告 customer file audiences): HASH_MOBILE_PHONE is the MD5 of the 11-digit mobile
  number (`13912345678`), SHA256_MOBILE_PHONE its SHA-256; lower-case hex. Phones only.
- Ocean Engine (巨量引擎 DMP): data_type 17 `手机号-MD5` and 14 `手机号-SHA256`, of the 11-digit mobile
  number. Phones only.
"""

from __future__ import annotations

import hashlib
import hmac

from pyspark.sql import Column
from pyspark.sql import functions as F

_BLOCK = 64  # SHA-256's block size in bytes (RFC 2104)


class TokenKeyError(ValueError):
    """The token key is missing or too short; the message says where to set it."""


def check_key(key: str | bytes | None, where: str = "the CDP_TOKEN_KEY environment variable") -> bytes:
    """The key as bytes; TokenKeyError when it is missing or shorter than 16 bytes (a guessable key makes
    tokens as weak as plain hashes)."""
    if key is None or key == "" or key == b"":
        raise TokenKeyError(f"no token key: set {where} to a random secret of 32 bytes or more "
                            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`), never committed")
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < 16:
        raise TokenKeyError(f"the token key in {where} is {len(raw)} bytes; use 32 random bytes or more")
    return raw


def token(value: str | None, key: str | bytes) -> str | None:
    """HMAC-SHA-256 of `value` under `key`, lower-case hex (None stays None)."""
    if value is None:
        return None
    return hmac.new(check_key(key), value.encode(), hashlib.sha256).hexdigest()


def token_col(col: Column, key: str | bytes) -> Column:
    """HMAC-SHA-256 of a string column under `key`, as lower-case hex: the same value `token` gives,
    computed with built-in SQL functions only (sha2, unhex, concat), so it runs on every engine."""
    k = check_key(key)
    if len(k) > _BLOCK:
        k = hashlib.sha256(k).digest()
    k = k.ljust(_BLOCK, b"\0")
    ipad = bytes(b ^ 0x36 for b in k).hex()
    opad = bytes(b ^ 0x5C for b in k).hex()
    inner = F.sha2(F.concat(F.unhex(F.lit(ipad)), F.encode(col, "UTF-8")), 256)
    return F.when(col.isNotNull(), F.sha2(F.concat(F.unhex(F.lit(opad)), F.unhex(inner)), 256))


# --- ad-platform normalisation and hashing -------------------------------------------------------------

PHONE_FORMATS = ("e164", "digits", "national")  # +8613912345678 | 8613912345678 | 13912345678
HASHES = ("sha256", "md5", "none")


def normalise_email(value: str | None) -> str | None:
    """Trimmed and lower-cased (every platform's rule); None when empty."""
    if value is None:
        return None
    v = value.strip().lower()
    return v or None


def normalise_phone(e164: str | None, fmt: str, country_code: str = "86") -> str | None:
    """A canonical E.164 phone (`+8613912345678`, as silver and gold hold it) in a platform's format:
    e164 keeps it, digits drops the `+`, national keeps the 11-digit number of `country_code` (None for
    a number of another country: a Chinese platform cannot match it)."""
    if e164 is None:
        return None
    if fmt == "e164":
        return e164
    if fmt == "digits":
        return e164.removeprefix("+")
    if fmt == "national":
        prefix = "+" + country_code
        return e164[len(prefix):] if e164.startswith(prefix) else None
    raise ValueError(f"unknown phone format {fmt!r}: one of {', '.join(PHONE_FORMATS)}")


def platform_hash(value: str | None, algorithm: str) -> str | None:
    """The lower-case hex digest of an already normalised value (none: the value itself)."""
    if value is None:
        return None
    if algorithm == "none":
        return value
    if algorithm not in ("sha256", "md5"):
        raise ValueError(f"unknown hash {algorithm!r}: one of {', '.join(HASHES)}")
    return hashlib.new(algorithm, value.encode()).hexdigest()


def email_col(col: Column) -> Column:
    """normalise_email as a column."""
    v = F.lower(F.trim(col))
    return F.when(v != "", v)


def phone_col(col: Column, fmt: str, country_code: str = "86") -> Column:
    """normalise_phone as a column (the input is canonical E.164)."""
    if fmt == "e164":
        return col
    if fmt == "digits":
        return F.regexp_replace(col, r"^\+", "")
    if fmt == "national":
        prefix = "+" + country_code
        return F.when(col.startswith(prefix), F.substring(col, len(prefix) + 1, 64))
    raise ValueError(f"unknown phone format {fmt!r}: one of {', '.join(PHONE_FORMATS)}")


def hash_col(col: Column, algorithm: str) -> Column:
    """platform_hash as a column."""
    if algorithm == "none":
        return col
    if algorithm == "sha256":
        return F.sha2(col, 256)
    if algorithm == "md5":
        return F.md5(col)
    raise ValueError(f"unknown hash {algorithm!r}: one of {', '.join(HASHES)}")
