"""Audience files for activation destinations: turns a segment's exported members into the rows a
destination matches on (hashed per its platform's convention, or plaintext where configured); no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.privacy.tokens import email_col, hash_col, phone_col


@dataclass(frozen=True)
class Platform:
    """What a platform matches on: per identifier, the normalised form; the hashes it accepts (the
    first is the default); whether its file has a header row."""

    phone: str | None  # a PHONE_FORMATS entry, or None: phones not accepted
    email: bool
    hashes: tuple[str, ...]
    header: bool = True
    doc: str = ""

    def identifiers(self) -> tuple[str, ...]:
        return tuple(i for i, ok in (("phone", self.phone is not None), ("email", self.email)) if ok)


# spark_jobs/privacy/tokens.py cites each platform's normalisation.
PLATFORMS: dict[str, Platform] = {
    "google": Platform("e164", True, ("sha256",), doc="Google Ads Customer Match: SHA-256 of +E.164 / lower-case e-mail"),
    "meta": Platform("digits", True, ("sha256",), doc="Meta customer list: SHA-256 of country code + number, no '+'"),
    "tencent_ads": Platform("national", False, ("md5", "sha256"), header=False,
                            doc="Tencent Ads customer file: HASH_MOBILE_PHONE (MD5) / SHA256_MOBILE_PHONE of the 11-digit mobile, one per line"),
    "ocean_engine": Platform("national", False, ("sha256", "md5"), header=False,
                             doc="Ocean Engine DMP: 手机号-SHA256 (data_type 14) / 手机号-MD5 (17) of the 11-digit mobile, one per line"),
    "plaintext": Platform("e164", True, ("none",), doc="an internal system (SMS gateway, call centre) that receives values in clear"),
}
AD_PLATFORMS = ("google", "meta", "tencent_ads", "ocean_engine")


def column_name(identifier: str, algorithm: str) -> str:
    """The file's column of an identifier: `phone_sha256`, `email_md5`, or `phone` in clear."""
    return identifier if algorithm == "none" else f"{identifier}_{algorithm}"


def build_audience(members: DataFrame, platform: str, identifiers: tuple[str, ...], algorithm: str,
                   country_code: str = "86") -> DataFrame:
    """The rows of one destination's file from `members` (person_id, phone in E.164, email): one row per
    person with at least one matchable identifier, a column per identifier (column_name), normalised and
    hashed as `platform` documents. Plaintext files keep person_id first; platform files carry only the
    matching keys; one row per distinct set of values."""
    spec = PLATFORMS[platform]
    cols = []
    for ident in identifiers:
        value = phone_col(F.col("phone"), spec.phone, country_code) if ident == "phone" else email_col(F.col("email"))
        cols.append(hash_col(value, algorithm).alias(column_name(ident, algorithm)))
    names = [column_name(i, algorithm) for i in identifiers]
    keep = [F.col("person_id")] if platform == "plaintext" else []
    out = members.select(*keep, *cols)
    any_id = F.lit(False)
    for n in names:
        any_id = any_id | F.col(n).isNotNull()
    return out.where(any_id).dropDuplicates([*(["person_id"] if keep else []), *names])
