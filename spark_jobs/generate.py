"""Synthetic channel dumps: writes landing/<channel or source>/<yyyy-mm-dd>/part-*.jsonl|csv and landing/_truth/ (reads nothing)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import io
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from faker import Faker
from pydantic import BaseModel, ConfigDict, Field

from spark_jobs.config import CHANNELS
from spark_jobs.contracts import CHANNEL_FIELDS, CHANNEL_FORMAT, EVENT_NAMES
from spark_jobs.privacy.consent import CONSENT_CHANNELS, CONSENT_SOURCES, CRM_CONSENT_FIELDS

__all__ = [
    "CHANNELS",
    "CORRUPT_KINDS",
    "CSV_HEADERS",
    "EXTENSIONS",
    "FORMATS",
    "JUNK_IDENTIFIERS",
    "MAX_LINES_PER_FILE",
    "CONSENT_COLUMNS",
    "ChannelStats",
    "ConsentRates",
    "DuplicateFile",
    "FileStats",
    "GenerateError",
    "LateDuplicates",
    "Manifest",
    "NoiseRates",
    "OutputFormat",
    "POPULATIONS",
    "Population",
    "ReexportedFile",
    "SOURCES",
    "generate",
]

# The landing format is the ingest contract's (docs/channels.md): one definition for both sides.
EXTENSIONS: dict[str, str] = dict(CHANNEL_FORMAT)
# Marketing consent fields: written only when `generate` is given ConsentRates (CSV: after the others).
CONSENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "crm": (*CRM_CONSENT_FIELDS.values(), "consent_time", "consent_source"), "wechat": ("wechat_consent",),
}
CSV_HEADERS: dict[str, tuple[str, ...]] = {
    ch: tuple(c.name for c in fields if c.name not in CONSENT_COLUMNS.get(ch, ()))
    for ch, fields in CHANNEL_FIELDS.items() if CHANNEL_FORMAT[ch] == "csv"
}
OutputFormat = Literal["default", "real"]  # docs/channels.md, or the sources' own exports
FORMATS: tuple[str, ...] = get_args(OutputFormat)
CorruptKind = Literal["truncated_json", "wrong_column_count", "bad_timestamp", "non_numeric_amount"]
_KIND_NAMES: tuple[str, ...] = ("truncated_json", "wrong_column_count", "bad_timestamp",
                                "non_numeric_amount")
_TRUNCATED, _WRONG_COLUMNS, _BAD_TIMESTAMP, _BAD_AMOUNT = range(4)
CORRUPT_KINDS: dict[str, tuple[str, ...]] = {
    "app_events": ("truncated_json", "bad_timestamp"),
    "wechat": ("truncated_json", "bad_timestamp"),
    "crm": ("wrong_column_count", "bad_timestamp"),
    "orders": ("wrong_column_count", "bad_timestamp", "non_numeric_amount"),
    "pos": ("wrong_column_count", "bad_timestamp", "non_numeric_amount"),
    "ad_leads": ("wrong_column_count", "bad_timestamp"),
}
# Records per part file; a truncated-JSON record split in two adds one physical line.
MAX_LINES_PER_FILE = 500_000

_ZERO_DEVICE = "00000000-0000-0000-0000-000000000000"
# The ANDROID_ID many Android 2.2 devices and emulators share, as Android reports it (lower case).
_DUPLICATE_ANDROID_ID = "9774d56d682e549c"
_JUNK_PHONE_RAW = "13800000000"
_JUNK_WORDS = ("null", "unknown")
# Canonical forms of the blocklisted values the generator injects, per id_type.
JUNK_IDENTIFIERS: dict[str, tuple[str, ...]] = {
    "phone": ("+8613800000000",),
    "email": ("test@test.com",),
    "device_id": (_ZERO_DEVICE, _DUPLICATE_ANDROID_ID.upper()),
    "login_id": _JUNK_WORDS,
    "unionid": _JUNK_WORDS,
}
_ID_TYPES = ("phone", "email", "device_id", "login_id", "member_id", "openid", "unionid")
# Manifest.patterns: what each identity pattern injected. Records are counted once as built (a
# resent, re-exported or late-duplicated copy is not counted again).
_PATTERN_COUNTS = (
    "recycled_phones",  # numbers re-issued to a second member (rows of ownership.csv / 2)
    "partner_phone_orders",  # orders and POS txns carrying a household partner's phone
    "duplicate_memberships",  # second memberships (rows of duplicate_members.csv)
    "store_phone_transactions",  # POS txns carrying a store's own phone
    "junk_device_events",  # app events carrying a junk device id of junk_device
)

# Volume calibration: ~20 raw lines per person over 30 days (measured, see tests).
_APP_EVENTS_PER_DAY = 0.62  # per app user at activity 1
_WECHAT_EVENTS_PER_DAY = 0.42  # per WeChat user at activity 1
_ORDERS_PER_DAY = 0.035  # at average propensity
_POS_PER_DAY = 0.04  # per offline shopper at average propensity
_LEADS_PER_DAY = 0.004
_CRM_UPDATES_PER_DAY = 0.01
_ACTIVITY_SIGMA = 1.0
_PROPENSITY_AB = (2.0, 6.0)
_CHURN_HAZARD = 0.008  # per day at activity 1; lower activity churns faster
_CHURN_FADE_DAYS = 14.0  # activity fades over the two weeks before churn
_NEVER = np.iinfo(np.int32).max // 2

_APP_SHARE, _LOGIN_SHARE, _MEMBER_BASE = 0.75, 0.9, 0.3
_WECHAT_SHARE, _UNIONID_SHARE, _PHONE_AUTH_SHARE = 0.6, 0.9, 0.9
_EMAIL_SHARE, _SECOND_PHONE_SHARE, _POS_SHOPPER_SHARE = 0.6, 0.25, 0.5
_LOGGED_IN_SHARE = 0.85  # share of a registered user's events sent while logged in
_FAMILY_DEVICE_USE = 0.4  # share of a family member's app events on the family device
_DEVICE_LOWER_CASE = 0.15  # SDKs that send device ids in lower case
_POS_GIVES_PHONE = 0.65
_WECHAT_SIGN_IN = 0.8  # app accounts of WeChat users made with "sign in with WeChat"
_CRM_BINDS_LOGIN = 0.85  # members whose app account is bound in the CRM
_CRM_BINDS_UNIONID = 0.85  # members whose WeChat unionid is bound in the CRM
# Identity patterns (NoiseRates.recycled_phone ... junk_device): how often an affected person shows it.
_PARTNER_PHONE_USE = 0.5  # of a partner-phone typist's orders and POS txns carry the partner's phone
_STORE_PHONE_USE = 0.5  # of the walk-ins (no phone given) at a store with a store phone get it typed
_SECOND_MEMBER_USE = 0.3  # of a duplicate member's orders (once both exist) use the second member id
_SECOND_NAME_PINYIN, _SECOND_NAME_TYPO = 0.3, 0.1  # second memberships' names in pinyin / with a typo
_SECOND_EMAIL_SAME, _SECOND_EMAIL_OTHER = 0.4, 0.3  # ... with the first's e-mail / another (else none)
_ANDROID_JUNK_ID = 0.5  # of junk Android device ids: the duplicate ANDROID_ID (else the zero OAID)
# pypinyin reads these surnames as the common word; as surnames they are read so.
_SURNAME_PINYIN = {"乐": "yue", "仇": "qiu", "单": "shan", "曾": "zeng", "查": "zha", "盖": "ge",
                   "翟": "zhai", "覃": "qin", "解": "xie", "区": "ou", "朴": "piao", "缪": "miao"}

_PLATFORMS = ("ios", "android", "web")
_APP_EVENT_NAMES = EVENT_NAMES["app_events"]
_APP_EVENT_P = np.array([0.16, 0.34, 0.08, 0.20, 0.08, 0.03, 0.05, 0.0, 0.06])
(_APP_START, _PAGE_VIEW, _SEARCH, _VIEW_ITEM, _ADD_CART, _PAY_ORDER, _LOGIN, _REGISTER,
 _SHARE) = range(9)
_WECHAT_APPS = ("wx_mp_shop", "wx_oa_brand")
_WECHAT_EVENT_NAMES = EVENT_NAMES["wechat"]
_MP_EVENT_P = np.array([0.40, 0.38, 0.16, 0.06])
_OA_EVENT_P = np.array([0.15, 0.85])
_PAGES = ("home", "category", "item_detail", "cart", "checkout", "search_result",
          "member_center", "coupon", "live_room")
_OA_MENUS = ("menu_new_arrivals", "menu_member", "menu_coupon", "menu_stores")
_CATEGORIES = ("apparel", "beauty", "shoes", "bags", "electronics", "home", "food", "baby",
               "sports", "books")
_CATEGORY_PRICE_YUAN = (199, 159, 399, 499, 899, 129, 49, 149, 259, 59)
_KEYWORDS = ("连衣裙", "口红", "跑鞋", "面霜", "蓝牙耳机", "双肩包", "羽绒服", "洗面奶", "奶粉",
             "瑜伽垫", "保温杯", "手机壳", "香水", "卫衣", "牛仔裤", "零食礼包", "空气炸锅",
             "儿童绘本", "防晒霜", "运动裤")
_CAMPAIGNS = ("new_member_gift", "double11_presale", "store_opening", "beauty_trial",
              "618_warmup", "spring_new_arrivals", "live_stream_coupon")
_AD_PLATFORMS = ("douyin", "kuaishou", "tencent_ads", "baidu", "xiaohongshu", "weibo")
_TIERS = ("normal", "silver", "gold", "platinum")
_EMAIL_DOMAINS = ("163.com", "126.com", "gmail.com", "sina.com", "hotmail.com", "outlook.com",
                  "foxmail.com", "139.com", "yeah.net")
_EMAIL_DOMAIN_P = np.array([0.30, 0.15, 0.10, 0.10, 0.08, 0.08, 0.09, 0.05, 0.05])
_QQ_EMAIL_SHARE = 0.35
# Mobile prefixes that libphonenumber accepts as valid Chinese mobiles.
_MOBILE_PREFIXES = np.array([130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 147, 150, 151, 152,
                             153, 155, 156, 157, 158, 159, 166, 173, 175, 176, 177, 178, 180,
                             181, 182, 183, 184, 185, 186, 187, 188, 189, 191, 198, 199])
# (city, weight): first-tier, new first-tier, second-tier and lower-tier cities.
_CITIES = (
    ("北京", 5.0), ("上海", 5.0), ("广州", 4.5), ("深圳", 4.5),
    ("成都", 3.0), ("杭州", 3.0), ("重庆", 3.0), ("武汉", 2.8), ("西安", 2.5), ("苏州", 2.5),
    ("南京", 2.5), ("天津", 2.3), ("长沙", 2.2), ("郑州", 2.2), ("东莞", 2.0), ("青岛", 2.0),
    ("合肥", 1.8), ("佛山", 1.8), ("宁波", 1.8),
    ("昆明", 1.5), ("沈阳", 1.5), ("济南", 1.5), ("无锡", 1.4), ("厦门", 1.4), ("福州", 1.4),
    ("温州", 1.3), ("哈尔滨", 1.3), ("石家庄", 1.3), ("大连", 1.2), ("南宁", 1.2), ("泉州", 1.2),
    ("贵阳", 1.1), ("常州", 1.1), ("长春", 1.1), ("南昌", 1.1), ("太原", 1.0), ("嘉兴", 1.0),
    ("珠海", 0.7), ("中山", 0.7), ("绍兴", 0.7), ("扬州", 0.6), ("兰州", 0.6), ("洛阳", 0.6),
    ("潍坊", 0.6), ("台州", 0.6), ("汕头", 0.6), ("芜湖", 0.5), ("桂林", 0.5), ("赣州", 0.5),
    ("遵义", 0.5), ("襄阳", 0.5), ("宜昌", 0.5), ("湛江", 0.5), ("柳州", 0.5), ("岳阳", 0.4),
    ("九江", 0.4), ("绵阳", 0.4), ("曲靖", 0.4), ("邯郸", 0.4), ("商丘", 0.4),
)
# Hour-of-day weights (China local time) for online activity, store opening hours, CRM edits.
_HOURS_ONLINE = np.array([1.5, 0.8, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 3.5, 4.0, 4.2, 4.5,
                          5.0, 4.6, 4.2, 4.2, 4.3, 4.5, 5.0, 5.8, 6.5, 7.0, 6.2, 3.5])
_HOURS_STORE = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 5, 4, 4, 4, 4, 5, 6, 7, 7, 5, 0, 0.0])
_HOURS_OFFICE = np.array([0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 2, 4, 4, 4,
                          3, 4, 4, 4, 4, 3, 2, 1, 1, 0.8, 0.5, 0.3])


class GenerateError(ValueError):
    """A bad argument to `generate` (the message says what to change)."""


Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

Population = Literal["default", "retail"]
# The identity patterns' rates (NoiseRates fields) per population. `default` is the original mix,
# without them; `retail` has them at rates a retail CDP sees (docs/channels.md, "Identity patterns").
POPULATIONS: dict[str, dict[str, float]] = {
    "default": {"recycled_phone": 0.0, "partner_phone": 0.0, "duplicate_membership": 0.0,
                "store_phone": 0.0, "junk_device": 0.0},
    "retail": {
        # Chinese carriers re-issue a cancelled number after ~90 days; a few percent of numbers change
        # hands a year, and a member base is years old: ~1% of members carry a re-issued number.
        "recycled_phone": 0.01,
        "partner_phone": 0.15,  # couples ordering for each other with the partner as receiver
        "duplicate_membership": 0.03,  # a second card made in a store, a mini-program, a campaign
        "store_phone": 0.2,  # stores whose cashiers type the store's phone for walk-ins
        "junk_device": 0.002,  # zero IDFA/OAID, the duplicate ANDROID_ID of SDKs that fall back to it
    },
}


class NoiseRates(BaseModel):
    """Shares of values/lines/households the generator spoils; every rate is in [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phone_format_variant: Rate = 0.3  # phones written as `139 1234 5678`, `+86 139...`, ...
    email_format_variant: Rate = 0.2  # upper/capitalised case, surrounding spaces
    name_typo: Rate = 0.02  # CRM names with one wrong character
    missing_field: Rate = 0.03  # optional fields left empty / JSON keys absent
    junk_identifier: Rate = 0.01  # identifier slots filled with a blocklisted junk value
    shared_family_device: Rate = 0.2  # multi-person households that share one device
    clerk_phone: Rate = 0.03  # POS txns where the clerk typed their own phone
    corrupt_line: Rate = 0.001  # records written unparseable/invalid
    duplicate_file: bool = True  # deliver one file a second time under another name
    # Default format, app_events and pos (LATE_ARRIVAL_CHANNELS): good records delivered with the next
    # day's file, times unchanged (an SDK's offline buffer uploaded the next morning, a POS terminal
    # that syncs late); none on the last day.
    late_arrival: Rate = 0.002
    # Only in the real-world exports (`format="real"`), of crm_excel:
    fullwidth_email: Rate = 0.02  # e-mails typed with a full-width at sign `＠`
    fullwidth_phone: Rate = 0.02  # phones typed in full-width digits `１３９...`
    crm_remark: Rate = 0.05  # rows with a free-text 备注 (commas, quotes, sometimes a line break)
    # Only in the real-world exports, of every source: redeliveries with other bytes, which only a
    # record key tells apart. Counts are ⌈rate × n⌉, so any rate above 0 gives at least one case.
    reexport_file: Rate = 0.2  # files of the days before the last exported again on a later day
    late_duplicate: Rate = 0.0005  # a source-day's last good records, repeated in the next day's first file
    # Identity patterns of real retail populations, 0 unless a population sets them (`POPULATIONS`;
    # docs/channels.md, "Identity patterns"). Counts of people, households and stores are ⌈rate × n⌉.
    recycled_phone: Rate = 0.0  # members (from before the window) whose number is later re-issued to a new member
    partner_phone: Rate = 0.0  # multi-person households where a member types a partner's phone on orders/POS
    duplicate_membership: Rate = 0.0  # members holding a second membership (same phone, birthday, city, name)
    store_phone: Rate = 0.0  # stores whose own mobile is typed for walk-in POS customers
    junk_device: Rate = 0.0  # iOS/Android app events whose device id is a well-known junk id

    @classmethod
    def preset(cls, population: str) -> NoiseRates:
        """The default noise with the identity patterns of `population` (a key of `POPULATIONS`)."""
        if population not in POPULATIONS:
            raise GenerateError(f"population must be one of {', '.join(POPULATIONS)}, got {population!r}")
        return cls(**POPULATIONS[population])


class ConsentRates(BaseModel):
    """How generated people answer marketing consent (README, "Personal data"); every rate is in [0, 1].

    CRM members are asked at registration: a share `asked` answers for all four channels, each opt-in at
    its rate (else opt-out), at the registration time and one of the consent sources; the others' four
    fields stay empty (never asked: no consent). A CRM change record (not a registration) changes one
    channel's answer at rate `change`, dated by the change. Mini-program users answer a subscribe-message
    prompt (an `mp_subscribe` event carrying wechat_consent) at rate `wechat_prompt`, opting in at `wechat`.
    Ground truth: landing/_truth/consent.csv, the latest readable statement per person and channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asked: Rate = 0.85
    sms: Rate = 0.6
    wechat: Rate = 0.5
    email: Rate = 0.4
    ads: Rate = 0.3
    change: Rate = 0.05
    wechat_prompt: Rate = 0.3

    def opt_in(self) -> np.ndarray:
        return np.array([getattr(self, ch) for ch in CONSENT_CHANNELS])


class FileStats(BaseModel):
    """One written file: path relative to the landing root, data lines, records, corrupt ones by kind.

    `lines` are physical data lines (headers excluded); `records` are the rows a reader of the file's
    format yields: one per JSON line (both halves of a split record), one per CSV record (a quoted
    field with a line break makes one record of two lines). `corrupt_lines` counts such rows.
    `duplicates` counts the good records an earlier file delivered already, same key and same text
    (a re-export's, late duplicates'); a byte-identical resend repeats its original's counts.
    """

    path: str
    lines: int
    records: int
    corrupt_lines: dict[CorruptKind, int]
    duplicates: int = 0
    late_arrivals: int = 0  # good records of the day before, delivered at the end of this file (NoiseRates.late_arrival)


class DuplicateFile(BaseModel):
    """A file delivered twice: `duplicate` has exactly the bytes of `original`."""

    original: str
    duplicate: str


class ReexportedFile(BaseModel):
    """A file exported again on a later day: `reexport` holds the records of `original` newest first,
    with CRLF line endings, in the source's encoding and with its header, so other bytes."""

    original: str
    reexport: str


class LateDuplicates(BaseModel):
    """The first `records` records of `file` repeat the last good records of `original`, the file of
    the day before, in the same order and text. `keys` are their record keys: the values of the
    model's key fields as the file writes them (sensors_app: the event id its preset builds,
    `<distinct_id>-<time>-<_track_id>`)."""

    original: str
    file: str
    records: int
    keys: list[tuple[str, ...]]


class ChannelStats(BaseModel):
    """Totals over every file of a channel on disk (the duplicate and re-exports included)."""

    files: int = 0
    lines: int = 0
    records: int = 0
    corrupt_lines: dict[CorruptKind, int] = Field(default_factory=dict)
    duplicate_files: list[DuplicateFile] = Field(default_factory=list)
    reexported_files: list[ReexportedFile] = Field(default_factory=list)  # format "real" only
    late_duplicates: list[LateDuplicates] = Field(default_factory=list)  # format "real" only
    per_file: list[FileStats] = Field(default_factory=list)


class Manifest(BaseModel):
    """What `generate` wrote and injected; saved as landing/_truth/manifest.json."""

    seed: int
    people: int
    days: int
    start: dt.date
    end: dt.date
    format: OutputFormat = "default"
    noise: NoiseRates
    total_lines: int  # data lines over all channels, the duplicate file included
    channels: dict[str, ChannelStats]  # by channel, or by source with format "real"
    identities: dict[str, int]  # identities.csv rows by kind
    population: Population = "default"
    patterns: dict[str, int] = Field(default_factory=dict)  # what each identity pattern injected (_PATTERN_COUNTS)
    consent: ConsentRates | None = None  # the consent rates, when consent was generated (_truth/consent.csv)


# ---------------------------------------------------------------- string building (pyarrow)


def _cat(*parts: pa.Array | str) -> pa.Array:
    """Concatenate element-wise; a null part makes the result null."""
    return pc.binary_join_element_wise(*parts, "")


def _cat_present(*parts: pa.Array | str) -> pa.Array:
    """Concatenate element-wise treating null parts as empty.

    (pyarrow 25's null_handling="skip" drops rows whose parts are all null, so never use it.)
    """
    return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")


def _where(mask: np.ndarray, if_true: pa.Array | str, if_false: pa.Array | str) -> pa.Array:
    return pc.if_else(pa.array(mask, pa.bool_()), if_true, if_false)


def _null_where(mask: np.ndarray, values: pa.Array) -> pa.Array:
    return pc.if_else(pa.array(mask, pa.bool_()), pa.scalar(None, pa.string()), values)


def _strings(values: tuple[str, ...] | list[str]) -> pa.Array:
    return pa.array(list(values), pa.string())


def _int_strings(values: np.ndarray, width: int = 0) -> pa.Array:
    out = pc.cast(pa.array(values, pa.int64()), pa.string())
    return pc.utf8_lpad(out, width=width, padding="0") if width else out


def _fixed_width(chars: np.ndarray) -> pa.Array:
    """A (n, w) uint8 matrix of ASCII codes as n strings of width w."""
    n, w = chars.shape
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int64)
    if offsets[-1] < 2**31:
        return pa.StringArray.from_buffers(
            n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(np.ascontiguousarray(chars)))
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars))).cast(pa.string())


def _tokens(rng: np.random.Generator, n: int, length: int, alphabet: bytes) -> np.ndarray:
    table = np.frombuffer(alphabet, np.uint8)
    return table[rng.integers(0, len(table), size=(n, length), dtype=np.uint8)]


def _uuids(rng: np.random.Generator, n: int, upper: bool) -> pa.Array:
    """Random version-4 UUID strings."""
    hexchars = b"0123456789ABCDEF" if upper else b"0123456789abcdef"
    digits = _tokens(rng, n, 32, hexchars)
    digits[:, 12] = ord("4")
    digits[:, 16] = np.frombuffer(hexchars[8:12], np.uint8)[rng.integers(0, 4, n)]
    out = np.full((n, 36), ord("-"), np.uint8)
    for src, dst, width in ((0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)):
        out[:, dst:dst + width] = digits[:, src:src + width]
    return _fixed_width(out)


_HMS: pa.Array | None = None
_MS3: pa.Array | None = None
_CENTS2: pa.Array | None = None


def _time_tables() -> tuple[pa.Array, pa.Array, pa.Array]:
    global _HMS, _MS3, _CENTS2
    if _HMS is None:
        s = np.arange(86_400)
        _HMS = _cat(_int_strings(s // 3600, 2), ":", _int_strings(s // 60 % 60, 2), ":",
                    _int_strings(s % 60, 2))
        _MS3 = _cat(".", _int_strings(np.arange(1000), 3))
        _CENTS2 = _int_strings(np.arange(100), 2)
    return _HMS, _MS3, _CENTS2


def _timestamps(dates: str | pa.Array, ms_of_day: np.ndarray) -> pa.Array:
    """`yyyy-MM-ddTHH:mm:ss.SSS+08:00`; `dates` is one `yyyy-MM-dd` or an array of them."""
    hms, ms3, _ = _time_tables()
    return _cat(dates, "T", hms.take(ms_of_day // 1000), ms3.take(ms_of_day % 1000), "+08:00")


def _yuan(cents: np.ndarray) -> pa.Array:
    _, _, cents2 = _time_tables()
    return _cat(_int_strings(cents // 100), ".", cents2.take(cents % 100))


def _dates(days_since_epoch: np.ndarray) -> pa.Array:
    return pa.array(days_since_epoch.astype(np.int32), pa.date32()).cast(pa.string())


def _json_str(key: str, values: pa.Array, lead: str = ",") -> pa.Array:
    """`,"key":"value"` (null where the value is null)."""
    return _cat(f'{lead}"{key}":"', values, '"')


def _ms_of_day(rng: np.random.Generator, n: int, hour_weights: np.ndarray) -> np.ndarray:
    hours = rng.choice(24, size=n, p=hour_weights / hour_weights.sum())
    return hours * 3_600_000 + rng.integers(0, 3_600_000, n)


def _sort_by_time(ms: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(ms, kind="stable")
    return [ms[order], *(a[order] for a in arrays)]


# ---------------------------------------------------------------- the population

_NONE = np.zeros(0, np.int64)


@dataclass
class _Patterns:
    """The identity patterns' cast (NoiseRates.recycled_phone ...); every array is empty, every lookup
    None, when its rate is 0, and the channel builders then draw exactly as without patterns."""

    # recycled_phone, per re-issued number: A (the first owner) changes to the new number Y at
    # (rec_d1, rec_change_ms); B (registering at (rec_d2, rec_reg_ms), not earlier) gets A's old X.
    rec_a: np.ndarray = field(default_factory=lambda: _NONE)
    rec_b: np.ndarray = field(default_factory=lambda: _NONE)
    rec_x: np.ndarray = field(default_factory=lambda: _NONE)  # phone pool slot of X as A's
    rec_bx: np.ndarray = field(default_factory=lambda: _NONE)  # B's own slot, which holds X's digits
    rec_y: np.ndarray = field(default_factory=lambda: _NONE)  # slot of Y (owner A)
    rec_d1: np.ndarray = field(default_factory=lambda: _NONE)
    rec_change_ms: np.ndarray = field(default_factory=lambda: _NONE)
    rec_d2: np.ndarray = field(default_factory=lambda: _NONE)
    rec_reg_ms: np.ndarray = field(default_factory=lambda: _NONE)
    rec_of_slot: np.ndarray | None = None  # phone slot -> index of its re-issued number, or -1
    # partner_phone: per person, the phone slot of the partner whose number they type, or -1.
    partner_slot: np.ndarray | None = None
    # duplicate_membership, per second membership (sorted by person).
    dup_person: np.ndarray = field(default_factory=lambda: _NONE)
    dup_day: np.ndarray = field(default_factory=lambda: _NONE)  # its registration day (relative)
    dup_member_id: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    dup_name: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    dup_pinyin: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    dup_email_kind: np.ndarray = field(default_factory=lambda: _NONE)  # 0 the first's, 1 dup_email, 2 none
    dup_email: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    dup_of: np.ndarray | None = None  # person -> index of their second membership, or -1
    # store_phone: per store, the phone slot of its own mobile, or -1.
    store_slot: np.ndarray | None = None

    def phone_at(self, slot: np.ndarray, d: int, ms: np.ndarray) -> np.ndarray:
        """Phone slots as used at (day d, ms): a re-issued X's first owner uses Y after the change."""
        if self.rec_of_slot is None:
            return slot
        pair = self.rec_of_slot[slot]
        hit = np.flatnonzero(pair >= 0)
        if not hit.size:
            return slot
        p = pair[hit]
        after = (d > self.rec_d1[p]) | ((d == self.rec_d1[p]) & (ms[hit] >= self.rec_change_ms[p]))
        out = slot.copy()
        out[hit[after]] = self.rec_y[p[after]]
        return out

    def not_before_registration(self, d: int, person: np.ndarray, ms: np.ndarray) -> np.ndarray:
        """Times `ms` of day-d records, those of a re-issued number's new owner who registers on d
        moved to at or after the registration: the new owner's first moment (others keep theirs)."""
        today = self.rec_d2 == d
        if not today.any():
            return ms
        b, reg = self.rec_b[today], self.rec_reg_ms[today]
        order = np.argsort(b)
        b, reg = b[order], reg[order]
        pos = np.minimum(np.searchsorted(b, person), b.size - 1)
        early = (b[pos] == person) & (ms < reg[pos])
        if not early.any():
            return ms
        r = reg[pos[early]]
        out = ms.copy()
        out[early] = r + ms[early] * (86_400_000 - r) // r  # [0, r) spread over [r, a day)
        return out


@dataclass
class _Consent:
    """Each person's marketing consent as the CRM and the mini-program record it, and what the files show.
    Statuses per channel (CONSENT_CHANNELS): -1 never asked, 0 opt_out, 1 opt_in. Times are local wall-clock
    milliseconds since 1970 (China time), -1 when none."""

    rates: ConsentRates
    seed: int
    status: np.ndarray  # (n, 4) int8: the CRM's current answers
    source: np.ndarray  # (n,) int8: index into CONSENT_SOURCES of the current CRM statement
    ms: np.ndarray  # (n,) int64: when the current CRM statement was given (-1 before the member's first row)
    registered_ms: np.ndarray  # (n,) int64: a member's statement at registration, for members from before the window
    readable: np.ndarray  # (n,) bool: a readable CRM row showed the current statement
    prompt_day: np.ndarray  # (n,) int32: day of the mp_subscribe answer (_NEVER: none)
    prompt_in: np.ndarray  # (n,) bool: that answer is opt_in
    prompt_ms: np.ndarray  # (n,) int64: when, if its event was written readable (else -1)


@dataclass
class _World:
    """Everything fixed over the window: people, their identifiers, stores, catalogue."""

    n: int
    days: int
    start: dt.date
    person_key: pa.Array
    household: np.ndarray  # household index per person (households are runs of consecutive people)
    household_key: pa.Array
    activity: np.ndarray
    propensity: np.ndarray
    signup_day: np.ndarray  # relative to start; negative = before the window
    churn_day: np.ndarray  # _NEVER when the person does not churn in the window
    gender: np.ndarray  # 0 M, 1 F
    birthday: np.ndarray  # days since epoch
    city: np.ndarray
    tier: np.ndarray
    name: pa.Array
    surname_len: np.ndarray  # characters of the surname that starts each name
    name_chars: pa.Array
    phone: pa.Array  # pool of 11-digit national numbers
    phone_owner: np.ndarray
    phone_start: np.ndarray
    phone_count: np.ndarray
    email: pa.Array  # per person, null when none
    device: pa.Array  # pool, canonical upper case
    device_platform: np.ndarray
    device_owner: np.ndarray
    device_start: np.ndarray
    device_count: np.ndarray
    family_device: np.ndarray  # per person: the household device they borrow, or -1
    app_user: np.ndarray
    has_login: np.ndarray
    login_id: pa.Array  # per person, null when none
    wechat_sign_in: np.ndarray  # the app account was made with "sign in with WeChat" (has a unionid)
    member: np.ndarray
    member_id: pa.Array  # per person, null when none
    wechat_app: np.ndarray  # (n, 2) bool: has wx_mp_shop / wx_oa_brand
    openid: pa.Array  # pool of 2n: person p's openid in app a is at 2p + a
    has_unionid: np.ndarray
    unionid: pa.Array
    phone_auth_day: np.ndarray
    pos_shopper: np.ndarray
    store_id: pa.Array
    store_clerk: np.ndarray  # person index of each store's clerk
    home_store: np.ndarray
    sku_id: pa.Array
    sku_category: np.ndarray
    sku_cents: np.ndarray
    sku_p: np.ndarray
    patterns: _Patterns = field(default_factory=_Patterns)
    consent: _Consent | None = None  # marketing consent (generate's ConsentRates), None: not generated

    def intensity(self, d: int, start_weekday: int) -> np.ndarray:
        """Expected-activity multiplier per person on day d (0 when not alive)."""
        alive = (self.signup_day <= d) & (d <= self.churn_day)
        fade = np.clip((self.churn_day - d) / _CHURN_FADE_DAYS, 0.25, 1.0)
        weekend = (start_weekday + d) % 7 >= 5
        return alive * self.activity * fade * (1.15 if weekend else 0.94)

    def pick_phone(self, rng: np.random.Generator, person: np.ndarray, second: float) -> np.ndarray:
        use_second = (self.phone_count[person] > 1) & (rng.random(person.size) < second)
        return self.phone_start[person] + use_second

    def pick_skus(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(self.sku_p.size, size=n, p=self.sku_p)


@dataclass
class _Seen:
    """Which identifiers were written anywhere, and which turned out shared."""

    phone: np.ndarray
    phone_shared: np.ndarray
    email: np.ndarray
    device: np.ndarray
    device_shared: np.ndarray
    login_id: np.ndarray
    member_id: np.ndarray
    openid: np.ndarray
    unionid: np.ndarray
    dup_member_id: np.ndarray  # per second membership (_Patterns.dup_person)
    dup_email: np.ndarray
    junk: set[tuple[str, str]] = field(default_factory=set)
    patterns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_PATTERN_COUNTS, 0))

    @classmethod
    def empty(cls, w: _World) -> _Seen:
        dups = w.patterns.dup_person.size
        return cls(
            phone=np.zeros(len(w.phone), bool), phone_shared=np.zeros(len(w.phone), bool),
            email=np.zeros(w.n, bool), device=np.zeros(len(w.device), bool),
            device_shared=np.zeros(len(w.device), bool), login_id=np.zeros(w.n, bool),
            member_id=np.zeros(w.n, bool), openid=np.zeros(2 * w.n, bool),
            unionid=np.zeros(w.n, bool), dup_member_id=np.zeros(dups, bool),
            dup_email=np.zeros(dups, bool))


def _unique_phones(rng: np.random.Generator, count: int) -> np.ndarray:
    taken = np.array([int(_JUNK_PHONE_RAW)], np.int64)
    out = np.empty(0, np.int64)
    while out.size < count:
        need = count - out.size
        draw = (_MOBILE_PREFIXES[rng.integers(0, _MOBILE_PREFIXES.size, need + need // 20 + 16)]
                * 100_000_000 + rng.integers(0, 100_000_000, need + need // 20 + 16))
        draw = np.concatenate([out, draw])
        _, first = np.unique(draw, return_index=True)
        draw = draw[np.sort(first)]
        out = draw[~np.isin(draw, taken)][:count]
    return out


def _sequential_ids(rng: np.random.Generator, prefix: str, base: int, has: np.ndarray,
                    signup_day: np.ndarray) -> pa.Array:
    """Ids issued in signup order (with gaps), null for people without one."""
    n = has.size
    order = np.lexsort((rng.random(n), signup_day))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    number = base + rank * 5 + rng.integers(0, 5, n)
    return _null_where(~has, _cat(prefix, _int_strings(number)))


def _emails(rng: np.random.Generator, fake: Faker, has: np.ndarray) -> pa.Array:
    n = has.size
    last = _strings(sorted({fake.last_romanized_name().lower() for _ in range(400)}))
    first = _strings(sorted({fake.first_romanized_name().lower() for _ in range(400)}))
    suffix = _where(rng.random(n) < 0.6, _int_strings(rng.integers(1, 9999, n)), "")
    named = _cat(last.take(rng.integers(0, len(last), n)), first.take(rng.integers(0, len(first), n)),
                 suffix)
    qq = rng.random(n) < _QQ_EMAIL_SHARE
    local = _where(qq, _int_strings(rng.integers(10_000, 3_000_000_000, n)), named)
    domain = _strings(_EMAIL_DOMAINS).take(
        rng.choice(len(_EMAIL_DOMAINS), size=n, p=_EMAIL_DOMAIN_P))
    domain = _where(qq, "qq.com", domain)
    email = _null_where(~has, _cat(local, "@", domain))
    # Generated local parts never contain '.', so '.<index>' makes repeats unique.
    dup = pd.Series(email.to_numpy(zero_copy_only=False)).duplicated().to_numpy() & has
    if dup.any():
        local = _where(dup, _cat(local, ".", _int_strings(np.arange(n))), local)
        email = _null_where(~has, _cat(local, "@", domain))
    return email


def _build_world(people: int, days: int, start: dt.date, seed: int,
                 noise: NoiseRates) -> _World:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, 0]))
    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    n = people
    idx = np.arange(n)

    activity = rng.lognormal(-_ACTIVITY_SIGMA**2 / 2, _ACTIVITY_SIGMA, n)
    propensity = rng.beta(*_PROPENSITY_AB, n)
    new_share = days / (days + 120)
    signup_day = np.where(rng.random(n) < new_share, rng.integers(0, days, n),
                          -rng.integers(1, 1096, n)).astype(np.int32)
    first_day = np.maximum(signup_day, 0)
    hazard = np.clip(_CHURN_HAZARD / np.sqrt(activity), 0.001, 0.05)
    churns = rng.random(n) < 1 - np.exp(-hazard * (days - first_day))
    churn_day = np.where(churns, first_day + (rng.random(n) * (days - first_day)).astype(np.int32),
                         _NEVER).astype(np.int32)

    # Households of 1-4 consecutive people sharing a city.
    sizes = rng.choice([1, 2, 3, 4], size=n, p=[0.45, 0.30, 0.15, 0.10])
    household = np.repeat(np.arange(n), sizes)[:n]
    household_start = np.flatnonzero(np.r_[True, household[1:] != household[:-1]])
    household_size = np.diff(np.r_[household_start, n])
    city_p = np.array([w for _, w in _CITIES])
    city = rng.choice(len(_CITIES), size=household_start.size, p=city_p / city_p.sum())[household]

    gender = (rng.random(n) < 0.55).astype(np.int8)
    age_days = (np.clip(rng.normal(34, 10, n), 16, 75) * 365.25).astype(np.int64)
    birthday = (start - dt.date(1970, 1, 1)).days - age_days - rng.integers(0, 365, n)
    spend = propensity * activity
    spend_rank = np.argsort(np.argsort(spend)) / max(n - 1, 1)
    tier = np.searchsorted([0.60, 0.87, 0.97], spend_rank, side="right").astype(np.int8)

    # Names: faker surnames + one or two characters of faker given names, per gender.
    surnames = _strings(sorted({fake.last_name() for _ in range(1500)}))
    male = sorted({c for _ in range(1500) for c in fake.first_name_male()})
    female = sorted({c for _ in range(1500) for c in fake.first_name_female()})
    chars = _strings(male + female)
    lo = np.where(gender == 1, len(male), 0)
    width = np.where(gender == 1, len(female), len(male))
    c1 = lo + (rng.random(n) * width).astype(np.int64)
    c2 = lo + (rng.random(n) * width).astype(np.int64)
    given = _where(rng.random(n) < 0.3, chars.take(c1), _cat(chars.take(c1), chars.take(c2)))
    surname = rng.integers(0, len(surnames), n)
    name = _cat(surnames.take(surname), given)
    surname_len = pc.utf8_length(surnames).to_numpy().astype(np.int8)[surname]

    phone_count = 1 + (rng.random(n) < _SECOND_PHONE_SHARE)
    phone_start = np.r_[0, np.cumsum(phone_count)[:-1]]
    phone = _int_strings(_unique_phones(rng, int(phone_count.sum())))
    phone_owner = np.repeat(idx, phone_count)

    email = _emails(rng, fake, rng.random(n) < _EMAIL_SHARE)

    device_count = rng.choice([1, 2, 3], size=n, p=[0.55, 0.33, 0.12])
    device_start = np.r_[0, np.cumsum(device_count)[:-1]]
    device = _uuids(rng, int(device_count.sum()), upper=True)
    device_platform = rng.choice(3, size=len(device), p=[0.35, 0.50, 0.15]).astype(np.int8)
    device_owner = np.repeat(idx, device_count)

    app_user = rng.random(n) < _APP_SHARE
    sharing = (household_size >= 2) & (rng.random(household_start.size) < noise.shared_family_device)
    owner = household_start[household]
    family_device = np.where(sharing[household] & (idx != owner), device_start[owner], -1)
    app_user |= family_device >= 0  # people who borrow a family device do use the app
    app_user[owner[family_device >= 0]] = True
    has_login = app_user & (rng.random(n) < _LOGIN_SHARE)
    wechat_sign_in = has_login & (rng.random(n) < _WECHAT_SIGN_IN)
    login_id = _sequential_ids(rng, "U", 10_000_000, has_login, signup_day)
    member = rng.random(n) < np.clip(_MEMBER_BASE + propensity, 0, 0.95)
    member_id = _sequential_ids(rng, "M", 200_000_000, member, signup_day)

    wechat_user = rng.random(n) < _WECHAT_SHARE
    kind = rng.choice(3, size=n, p=[0.5, 0.2, 0.3])  # mp only, oa only, both
    wechat_app = np.stack([wechat_user & (kind != 1), wechat_user & (kind != 0)], axis=1)
    base64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    openid = _fixed_width(np.concatenate(
        [np.full((2 * n, 1), ord("o"), np.uint8), _tokens(rng, 2 * n, 27, base64)], axis=1))
    has_unionid = wechat_user & (rng.random(n) < _UNIONID_SHARE)
    wechat_sign_in &= has_unionid
    unionid = _fixed_width(np.concatenate(
        [np.full((n, 1), ord("o"), np.uint8), _tokens(rng, n, 27, base64)], axis=1))
    last_day = np.minimum(churn_day, days - 1)
    auth_day = first_day + (rng.random(n) * (last_day - first_day + 1)).astype(np.int32)
    phone_auth_day = np.where(wechat_app[:, 0] & (rng.random(n) < _PHONE_AUTH_SHARE), auth_day,
                              _NEVER).astype(np.int32)

    n_stores = int(np.clip(n // 2000, 3, 3000))
    store_city = rng.choice(len(_CITIES), size=n_stores, p=city_p / city_p.sum())
    by_city = np.argsort(store_city, kind="stable")
    per_city = np.bincount(store_city, minlength=len(_CITIES))
    city_first = np.cumsum(per_city) - per_city
    u = rng.random(n)
    home_store = np.where(per_city[city] > 0,
                          by_city[np.minimum(city_first[city] + (u * per_city[city]).astype(np.int64),
                                             n_stores - 1)],
                          (u * n_stores).astype(np.int64))
    store_id = _cat("S", _int_strings(np.arange(1, n_stores + 1), 4))
    store_clerk = rng.integers(0, n, n_stores)

    n_skus = 3000
    sku_category = rng.integers(0, len(_CATEGORIES), n_skus)
    base = np.array(_CATEGORY_PRICE_YUAN)[sku_category]
    sku_cents = (np.round(base * rng.lognormal(0, 0.6, n_skus)) * 100 - 1).astype(np.int64)
    sku_p = 1 / (np.arange(n_skus) + 20.0)

    return _World(
        n=n, days=days, start=start,
        person_key=_cat("P", _int_strings(idx + 1, 8)), household=household,
        household_key=_cat("H", _int_strings(household + 1, 8)),
        activity=activity, propensity=propensity, signup_day=signup_day, churn_day=churn_day,
        gender=gender, birthday=birthday, city=city, tier=tier, name=name, surname_len=surname_len,
        name_chars=chars,
        phone=phone, phone_owner=phone_owner, phone_start=phone_start, phone_count=phone_count,
        email=email, device=device, device_platform=device_platform, device_owner=device_owner,
        device_start=device_start, device_count=device_count, family_device=family_device,
        app_user=app_user, has_login=has_login, login_id=login_id, member=member,
        member_id=member_id, wechat_app=wechat_app, openid=openid, has_unionid=has_unionid,
        unionid=unionid, phone_auth_day=phone_auth_day, wechat_sign_in=wechat_sign_in,
        pos_shopper=rng.random(n) < _POS_SHOPPER_SHARE, store_id=store_id,
        store_clerk=store_clerk, home_store=home_store,
        sku_id=_cat("SKU", _int_strings(np.arange(100_001, 100_001 + n_skus))),
        sku_category=sku_category, sku_cents=sku_cents, sku_p=sku_p / sku_p.sum())


def _cast_consent(w: _World, rates: ConsentRates, seed: int) -> _Consent:
    """Draw everyone's consent from streams of their own: the other channels' records do not change."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 400, 0]))
    n = w.n
    asked = rng.random(n) < rates.asked
    status = np.where(asked[:, None], (rng.random((n, len(CONSENT_CHANNELS))) < rates.opt_in()).astype(np.int8),
                      np.int8(-1)).astype(np.int8)
    epoch = (w.start - dt.date(1970, 1, 1)).days
    registered_ms = (epoch + w.signup_day.astype(np.int64)) * 86_400_000 + _ms_of_day(rng, n, _HOURS_OFFICE)
    first_day = np.maximum(w.signup_day, 0)
    last_day = np.minimum(w.churn_day, w.days - 1)
    day = first_day + (rng.random(n) * (last_day - first_day + 1)).astype(np.int32)
    prompted = w.wechat_app[:, 0] & (rng.random(n) < rates.wechat_prompt) & (first_day <= last_day)
    return _Consent(
        rates=rates, seed=seed, status=status, source=rng.integers(0, len(CONSENT_SOURCES), n).astype(np.int8),
        ms=np.full(n, -1, np.int64), registered_ms=registered_ms, readable=np.zeros(n, bool),
        prompt_day=np.where(prompted, day, _NEVER).astype(np.int32), prompt_in=rng.random(n) < rates.wechat,
        prompt_ms=np.full(n, -1, np.int64))


def _local_timestamps(local_ms: np.ndarray) -> pa.Array:
    """`yyyy-MM-ddTHH:mm:ss.SSS+08:00` of local wall-clock ms since 1970; null where negative."""
    ok = np.maximum(local_ms, 0)
    return _null_where(local_ms < 0, _timestamps(_dates(ok // 86_400_000), ok % 86_400_000))


def _crm_consent(w: _World, d: int, person: np.ndarray, second: np.ndarray, created_today: np.ndarray,
                 ms: np.ndarray, corrupt: np.ndarray) -> list[pa.Array]:
    """The consent fields of a CRM day's rows (time-ordered), advancing each member's statement: set at
    registration, changed by some change records. A second membership's form asks nothing."""
    c = w.consent
    rng = np.random.default_rng(np.random.SeedSequence([c.seed, 401, d]))
    m = person.size
    updated_ms = ((w.start - dt.date(1970, 1, 1)).days + d) * 86_400_000 + ms
    change = ~created_today & ~second & (corrupt < 0) & (rng.random(m) < c.rates.change)
    channel = rng.integers(0, len(CONSENT_CHANNELS), m)
    source = rng.integers(0, len(CONSENT_SOURCES), m)
    status = np.full((m, len(CONSENT_CHANNELS)), -1, np.int8)
    when = np.full(m, -1, np.int64)
    where = np.zeros(m, np.int8)
    for i in np.flatnonzero(~second):
        p = person[i]
        if c.ms[p] < 0:
            c.ms[p] = updated_ms[i] if created_today[i] else c.registered_ms[p]
        if change[i] and c.status[p, channel[i]] >= 0:  # only an answer given can change
            c.status[p, channel[i]] ^= 1
            c.ms[p], c.source[p] = updated_ms[i], source[i]
        status[i], when[i], where[i] = c.status[p], c.ms[p], c.source[p]
        c.readable[p] |= corrupt[i] < 0
    asked = (status >= 0).any(axis=1)
    answers = _strings(("opt_out", "opt_in"))
    return [*(_null_where(status[:, k] < 0, answers.take(np.maximum(status[:, k], 0)))
              for k in range(len(CONSENT_CHANNELS))),
            _local_timestamps(np.where(asked, when, -1)),
            _null_where(~asked, _strings(CONSENT_SOURCES).take(where))]


def _fresh_phones(rng: np.random.Generator, taken: np.ndarray, count: int) -> np.ndarray:
    """`count` distinct valid mobile numbers, none of them `taken`."""
    taken = np.sort(taken)
    out = np.empty(0, np.int64)
    while out.size < count:
        draw = _unique_phones(rng, 2 * (count - out.size) + 16)
        used = taken[np.minimum(np.searchsorted(taken, draw), taken.size - 1)] == draw
        out = np.r_[out, draw[~used & ~np.isin(draw, out)]][:count]
    return out


@functools.cache
def _pinyin(text: str) -> str:
    from pypinyin import lazy_pinyin

    return "".join(lazy_pinyin(text))


def _pinyin_name(name: str, surname_len: int) -> str:
    """`张伟` -> `Zhang Wei`, `欧阳小明` -> `Ouyang Xiaoming`: surname and given name, one word each
    (a surname read as a surname: `曾` is Zeng)."""
    surname, given = name[:surname_len], name[surname_len:]
    return f"{(_SURNAME_PINYIN.get(surname) or _pinyin(surname)).capitalize()} {_pinyin(given).capitalize()}"


def _share(rate: float, n: int) -> int:
    """⌈rate × n⌉: any rate above 0 picks at least one of n."""
    return min(n, math.ceil(rate * n - 1e-9))


def _cast_patterns(w: _World, noise: NoiseRates, seed: int) -> None:
    """Pick the people, households and stores of each identity pattern (`NoiseRates.recycled_phone`
    ... `store_phone`) into `w.patterns`, and add their new numbers (Y, store phones) to the phone
    pool. Each pattern draws from its own stream; with all rates 0 nothing changes."""
    def stream(k: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([seed, 400, k]))

    pat, n = w.patterns, w.n
    clerk = np.zeros(n, bool)
    clerk[w.store_clerk] = True
    single = w.phone_count == 1  # a re-issued X is its owner's only number
    if noise.recycled_phone > 0:
        rng = stream(1)
        # B registers in the window (day >= 1, after A's change on a day >= 1): none when days < 2.
        new_b = np.flatnonzero(w.member & (w.signup_day >= 1) & single & w.has_login & ~clerk)
        old_a = w.member & (w.signup_day < 0) & (w.churn_day == _NEVER) & single & ~clerk  # A changes in the window
        k = min(_share(noise.recycled_phone, int(old_a.sum())), new_b.size)
        b = np.sort(rng.choice(new_b, size=k, replace=False))
        old_a &= ~np.isin(w.household, w.household[b])
        a = rng.choice(np.flatnonzero(old_a), size=min(k, int(old_a.sum())), replace=False)
        b = b[:a.size]
        d2 = w.signup_day[b].astype(np.int64)
        d1 = 1 + (rng.random(a.size) * d2).astype(np.int64)  # 1 <= d1 <= d2
        t1, t2 = _ms_of_day(rng, a.size, _HOURS_OFFICE), _ms_of_day(rng, a.size, _HOURS_OFFICE)
        same_day = d1 == d2
        pat.rec_a, pat.rec_b, pat.rec_d1, pat.rec_d2 = a, b, d1, d2
        pat.rec_change_ms = np.where(same_day, np.minimum(t1, t2), t1)
        pat.rec_reg_ms = np.where(same_day, np.maximum(t1, t2), t2)
        pat.rec_x, pat.rec_bx = w.phone_start[a], w.phone_start[b]
    stores = np.zeros(0, np.int64)
    if noise.store_phone > 0:
        n_stores = len(w.store_id)
        stores = np.sort(stream(4).choice(n_stores, size=_share(noise.store_phone, n_stores), replace=False))
    if noise.duplicate_membership > 0:
        rng = stream(3)
        last = np.minimum(w.churn_day, w.days - 1)  # the second registers later, while the person is active
        can = w.member & (w.signup_day < last)
        can[pat.rec_a] = can[pat.rec_b] = False
        k = min(_share(noise.duplicate_membership, int(w.member.sum())), int(can.sum()))
        person = np.sort(rng.choice(np.flatnonzero(can), size=k, replace=False))
        first = w.signup_day[person].astype(np.int64)
        day = first + 1 + (rng.random(k) * (last[person] - first)).astype(np.int64)
        order = np.lexsort((rng.random(k), day))
        rank = np.empty(k, np.int64)
        rank[order] = np.arange(k)
        number = 200_000_000 + 5 * n + 5 * rank + rng.integers(0, 5, k)  # after every first member id
        u = rng.random(k)
        pinyin = u < _SECOND_NAME_PINYIN
        typo = ~pinyin & (u < _SECOND_NAME_PINYIN + _SECOND_NAME_TYPO)
        name = w.name.take(person)
        wrong = w.name_chars.take(rng.integers(0, len(w.name_chars), k))
        name = _where(typo, _cat(pc.utf8_slice_codeunits(name, 0, -1), wrong), name)
        at = np.flatnonzero(pinyin)
        if at.size:
            written = [_pinyin_name(x, int(s)) for x, s in zip(name.take(at).to_pylist(),
                                                              w.surname_len[person[at]], strict=True)]
            name = pc.replace_with_mask(name, pa.array(pinyin), pa.array(written, pa.string()))
        no_mail = 1 - _SECOND_EMAIL_SAME - _SECOND_EMAIL_OTHER
        mail_kind = rng.choice(3, size=k, p=[_SECOND_EMAIL_SAME, _SECOND_EMAIL_OTHER, no_mail])
        qq = _cat(_int_strings(rng.integers(10_000, 3_000_000_000, k)), "@qq.com")
        taken = pc.is_in(qq, value_set=w.email.drop_null()).to_numpy(zero_copy_only=False)
        taken |= pd.Series(qq.to_numpy(zero_copy_only=False)).duplicated().to_numpy()
        mail_kind[(mail_kind == 1) & taken] = 2
        pat.dup_person, pat.dup_day, pat.dup_name, pat.dup_pinyin = person, day, name, pinyin
        pat.dup_member_id, pat.dup_email_kind, pat.dup_email = _cat("M", _int_strings(number)), mail_kind, qq
        if k:
            pat.dup_of = np.full(n, -1, np.int64)
            pat.dup_of[person] = np.arange(k)
    if noise.partner_phone > 0:
        rng = stream(2)
        starts = np.flatnonzero(np.r_[True, w.household[1:] != w.household[:-1]])
        sizes = np.diff(np.r_[starts, n])
        busy = np.zeros(starts.size, bool)  # households of a re-issued number stay out
        busy[w.household[pat.rec_a]] = busy[w.household[pat.rec_b]] = True
        can = np.flatnonzero((sizes >= 2) & ~busy)
        h = np.sort(rng.choice(can, size=min(can.size, _share(noise.partner_phone, int((sizes >= 2).sum()))),
                               replace=False))
        at = (rng.random(h.size) * sizes[h]).astype(np.int64)
        other = (at + 1 + (rng.random(h.size) * (sizes[h] - 1)).astype(np.int64)) % sizes[h]
        pat.partner_slot = np.full(n, -1, np.int64)
        pat.partner_slot[starts[h] + at] = w.phone_start[starts[h] + other]
    if pat.rec_a.size or stores.size:
        pool = pc.cast(w.phone, pa.int64()).to_numpy().copy()
        fresh = _fresh_phones(stream(0), pool, pat.rec_a.size + stores.size)
        pool[pat.rec_bx] = pool[pat.rec_x]  # B's number is X
        pat.rec_y = pool.size + np.arange(pat.rec_a.size)
        w.phone = _int_strings(np.r_[pool, fresh])
        w.phone_owner = np.r_[w.phone_owner, pat.rec_a, w.store_clerk[stores]]
        pat.store_slot = np.full(len(w.store_id), -1, np.int64)
        pat.store_slot[stores] = pool.size + pat.rec_a.size + np.arange(stores.size)
        if pat.rec_a.size:
            pat.rec_of_slot = np.full(len(w.phone), -1, np.int64)
            pat.rec_of_slot[pat.rec_x] = np.arange(pat.rec_a.size)
        if not stores.size:
            pat.store_slot = None


# ---------------------------------------------------------------- per channel-day batches


@dataclass
class _Batch:
    """One channel-day of records, time-ordered; fields are joined when written."""

    fields: list[pa.Array | str]
    is_json: bool
    corrupt: np.ndarray  # per record: index into _KIND_NAMES, or -1
    aux: np.ndarray  # (records, 2) uniforms that shape line-level corruption
    extra_columns: tuple[str, ...] = ()  # CSV: columns after CSV_HEADERS' (the consent fields)

    def __len__(self) -> int:
        return self.corrupt.size

    def lines(self, a: int, b: int) -> pa.Array:
        cols = [f.slice(a, b - a) if isinstance(f, pa.Array) else f for f in self.fields]
        if self.is_json:
            return _cat_present("{", *cols, "}\n")
        joined = [c for col in cols for c in (col, ",")]
        joined[-1] = "\n"
        return _cat_present(*joined)


def _pick_corrupt(rng: np.random.Generator, m: int, rate: float, channel: str) -> np.ndarray:
    kinds = np.array([_KIND_NAMES.index(k) for k in CORRUPT_KINDS[channel]], np.int8)
    hit = rng.random(m) < rate
    return np.where(hit, kinds[rng.integers(0, kinds.size, m)], -1).astype(np.int8)


def _spoil_timestamps(rng: np.random.Generator, ts: pa.Array, corrupt: np.ndarray,
                      day: dt.date) -> pa.Array:
    mask = corrupt == _BAD_TIMESTAMP
    if not mask.any():
        return ts
    bad = _strings([f"{day.year}-13-45T25:61:00+08:00", "yesterday",
                    f"{day.isoformat()}T25:61:00+08:00", "0000-00-00T00:00:00+08:00",
                    f"{day.day:02d}/{day.month:02d}/{day.year} 99:99"])
    return pc.replace_with_mask(ts, pa.array(mask), bad.take(rng.integers(0, len(bad), mask.sum())))


def _spoil_amounts(rng: np.random.Generator, amount: pa.Array, corrupt: np.ndarray) -> pa.Array:
    mask = corrupt == _BAD_AMOUNT
    if not mask.any():
        return amount
    sub = amount.filter(pa.array(mask))
    k = len(sub)
    # Never a currency sign: `¥12.34` is a readable amount where a source declares the symbol.
    bad = pc.choose(pa.array(rng.integers(0, 4, k), pa.int8()),
                    _cat(sub, ".", _int_strings(rng.integers(1, 10, k))),  # 12.34.5
                    pa.array(["abc"] * k), pc.replace_substring(sub, ".", ".."), pa.array(["--"] * k))
    return pc.replace_with_mask(amount, pa.array(mask), bad)


def _raw_phones(rng: np.random.Generator, digits: pa.Array, rate: float) -> pa.Array:
    """National 11-digit numbers, a `rate` share rewritten in another common raw format."""
    m = len(digits)
    variant = np.where(rng.random(m) < rate, rng.integers(0, 7, m), -1)
    mask = variant >= 0
    if not mask.any():
        return digits
    sub = digits.filter(pa.array(mask))
    a, b, c = (pc.utf8_slice_codeunits(sub, i, j) for i, j in ((0, 3), (3, 7), (7, 11)))
    formatted = pc.choose(
        pa.array(variant[mask], pa.int8()),
        _cat(a, " ", b, " ", c), _cat(a, "-", b, "-", c), _cat("+86 ", sub), _cat("0086", sub),
        _cat("86-", sub), _cat("+86", sub), _cat("+86 ", a, " ", b, " ", c))
    return pc.replace_with_mask(digits, pa.array(mask), formatted)


def _phone_values(rng: np.random.Generator, w: _World, seen: _Seen, noise: NoiseRates,
                  phone_idx: np.ndarray, present: np.ndarray, d: int, ms: np.ndarray,
                  keep: np.ndarray | None = None) -> tuple[pa.Array, np.ndarray]:
    """Raw phones for pool indices as used at (day d, ms of day), junk-replaced (never where `keep`),
    with format variants, null where not present.

    Also returns which records carry their real phone.
    """
    phone_idx = w.patterns.phone_at(phone_idx, d, ms)
    m = phone_idx.size
    junk = present & (rng.random(m) < noise.junk_identifier)
    if keep is not None:
        junk &= ~keep
    if junk.any():
        seen.junk.add(("phone", JUNK_IDENTIFIERS["phone"][0]))
    written = present & ~junk
    seen.phone[phone_idx[written]] = True
    digits = _where(junk, _JUNK_PHONE_RAW, w.phone.take(np.where(present, phone_idx, 0)))
    return _null_where(~present, _raw_phones(rng, digits, noise.phone_format_variant)), written


def _props(rng: np.random.Generator, noise: NoiseRates, pieces: list[tuple[str, pa.Array,
           np.ndarray]]) -> pa.Array:
    """`,"props":{...}` from (key, values, present) triples; missing_field drops keys."""
    parts = []
    for key, values, present in pieces:
        keep = present & (rng.random(present.size) >= noise.missing_field)
        parts.append(_null_where(~keep, _json_str(key, values)))
    body = pc.utf8_slice_codeunits(_cat_present(*parts), 1)  # drop the leading comma
    return _cat(',"props":{', body, "}")


def _build_app_events(w: _World, seen: _Seen, noise: NoiseRates, d: int, day: dt.date,
                      rng: np.random.Generator, intensity: np.ndarray) -> _Batch:
    counts = rng.poisson(_APP_EVENTS_PER_DAY * intensity * w.app_user)
    person = np.repeat(np.arange(w.n), counts)
    name = rng.choice(len(_APP_EVENT_NAMES), size=person.size, p=_APP_EVENT_P)
    registering = np.flatnonzero(w.has_login & (w.signup_day == d))
    person = np.r_[person, registering]
    name = np.r_[name, np.full(registering.size, _REGISTER)]
    ms = w.patterns.not_before_registration(d, person, _ms_of_day(rng, person.size, _HOURS_ONLINE))
    ms, person, name = _sort_by_time(ms, person, name)
    m = person.size

    logged = w.has_login[person] & (w.signup_day[person] <= d)
    name[(name == _LOGIN) & ~logged] = _PAGE_VIEW
    auth = (name == _LOGIN) | (name == _REGISTER)
    login_on = logged & ((rng.random(m) < _LOGGED_IN_SHARE) | auth)

    dev = w.device_start[person] + (w.device_count[person] * rng.random(m) ** 2).astype(np.int64)
    family = w.family_device[person]
    borrowed = (family >= 0) & (rng.random(m) < _FAMILY_DEVICE_USE)
    dev = np.where(borrowed, family, dev)
    junk_dev = rng.random(m) < noise.junk_identifier
    # junk_device: the zero IDFA (iOS); the duplicate ANDROID_ID or the zero OAID (Android).
    known_junk = android_id = np.zeros(m, bool)
    if noise.junk_device > 0:
        platform_of = w.device_platform[dev]
        known_junk = ~junk_dev & (platform_of < 2) & (rng.random(m) < noise.junk_device)
        android_id = known_junk & (platform_of == 1) & (rng.random(m) < _ANDROID_JUNK_ID)
        seen.patterns["junk_device_events"] += int(known_junk.sum())
        if android_id.any():
            seen.junk.add(("device_id", _DUPLICATE_ANDROID_ID.upper()))
    real_dev = ~junk_dev & ~known_junk
    seen.device_shared[dev[borrowed & real_dev]] = True
    seen.device[dev[real_dev]] = True
    if junk_dev.any() or (known_junk & ~android_id).any():
        seen.junk.add(("device_id", _ZERO_DEVICE))
    device = w.device.take(dev)
    device = _where(rng.random(m) < _DEVICE_LOWER_CASE, pc.utf8_lower(device), device)
    device = _where(junk_dev, _ZERO_DEVICE, device)
    if known_junk.any():
        device = _where(known_junk, _where(android_id, _DUPLICATE_ANDROID_ID, _ZERO_DEVICE), device)
    platform = _null_where(rng.random(m) < noise.missing_field,
                           _json_str("platform", _strings(_PLATFORMS).take(w.device_platform[dev])))

    junk_login = login_on & (rng.random(m) < noise.junk_identifier)
    junk_word = rng.integers(0, 2, m)
    for j in np.unique(junk_word[junk_login]):
        seen.junk.add(("login_id", _JUNK_WORDS[j]))
    login_missing = ~auth & (rng.random(m) < noise.missing_field)
    seen.login_id[person[login_on & ~junk_login & ~login_missing]] = True
    login = _where(junk_login, _strings(_JUNK_WORDS).take(junk_word), w.login_id.take(person))
    login = _where(login_on, _json_str("login_id", login), ',"login_id":null')
    login = _null_where(login_missing, login)
    # Login and register are verified by an SMS code: those events carry the account's phone.
    # Sign-ins, and launches while signed in, report the account: its phone (verified by SMS code)
    # and, for accounts made with "sign in with WeChat", the person's unionid.
    profile = logged & (auth | ((name == _APP_START) & login_on & ~login_missing))
    phone, _ = _phone_values(rng, w, seen, noise, w.pick_phone(rng, person, 0.1), profile, d, ms)
    phone = _where(profile, _json_str("phone", phone), ',"phone":null')
    via_wechat = profile & w.wechat_sign_in[person]
    seen.unionid[person[via_wechat]] = True
    unionid = _where(via_wechat, _json_str("unionid", w.unionid.take(person)), ',"unionid":null')

    page = rng.integers(0, len(_PAGES), m)
    for event, fixed in ((_APP_START, "home"), (_SEARCH, "search_result"),
                         (_VIEW_ITEM, "item_detail"), (_LOGIN, "member_center"),
                         (_REGISTER, "member_center"), (_ADD_CART, "item_detail")):
        page[name == event] = _PAGES.index(fixed)
    sku = w.pick_skus(rng, m)
    cents = w.sku_cents[sku] * rng.integers(1, 4, m)
    props = _props(rng, noise, [
        ("page", _strings(_PAGES).take(page),
         np.isin(name, (_APP_START, _PAGE_VIEW, _SEARCH, _VIEW_ITEM, _LOGIN, _REGISTER))),
        ("keyword", _strings(_KEYWORDS).take(rng.integers(0, len(_KEYWORDS), m)),
         name == _SEARCH),
        ("sku", w.sku_id.take(sku), np.isin(name, (_VIEW_ITEM, _ADD_CART, _SHARE, _PAY_ORDER))),
        ("category", _strings(_CATEGORIES).take(w.sku_category[sku]),
         np.isin(name, (_VIEW_ITEM, _ADD_CART))),
        ("amount", _yuan(cents), name == _PAY_ORDER),
    ])

    corrupt = _pick_corrupt(rng, m, noise.corrupt_line, "app_events")
    ts = _spoil_timestamps(rng, _timestamps(day.isoformat(), ms), corrupt, day)
    fields = [_json_str("event_id", _uuids(rng, m, upper=False), lead=""),
              _json_str("device_id", device), login, phone, unionid, platform,
              _json_str("event_name", _strings(_APP_EVENT_NAMES).take(name)),
              _json_str("event_time", ts), props]
    return _Batch(fields, True, corrupt, rng.random((m, 2)))


def _build_wechat(w: _World, seen: _Seen, noise: NoiseRates, d: int, day: dt.date,
                  rng: np.random.Generator, intensity: np.ndarray) -> _Batch:
    users = w.wechat_app.any(axis=1)
    counts = rng.poisson(_WECHAT_EVENTS_PER_DAY * intensity * users)
    person = np.repeat(np.arange(w.n), counts)
    both = w.wechat_app[person].all(axis=1)
    app = np.where(both, (rng.random(person.size) >= 0.7).astype(np.int64),
                   w.wechat_app[person, 1].astype(np.int64))
    name = np.where(app == 0, rng.choice(4, size=person.size, p=_MP_EVENT_P),
                    4 + rng.choice(2, size=person.size, p=_OA_EVENT_P))
    authorising = np.flatnonzero(w.phone_auth_day == d)
    person = np.r_[person, authorising]
    app = np.r_[app, np.zeros(authorising.size, np.int64)]
    name = np.r_[name, np.full(authorising.size, 6)]
    if w.consent is not None:  # answers to the mini-program's subscribe-message prompt
        answering = np.flatnonzero(w.consent.prompt_day == d)
        person = np.r_[person, answering]
        app = np.r_[app, np.zeros(answering.size, np.int64)]
        name = np.r_[name, np.full(answering.size, 7)]
    ms = w.patterns.not_before_registration(d, person, _ms_of_day(rng, person.size, _HOURS_ONLINE))
    ms, person, app, name = _sort_by_time(ms, person, app, name)
    m = person.size

    openid_idx = 2 * person + app
    seen.openid[openid_idx] = True
    has_union = w.has_unionid[person]
    junk_union = rng.random(m) < noise.junk_identifier
    junk_word = rng.integers(0, 2, m)
    for j in np.unique(junk_word[junk_union]):
        seen.junk.add(("unionid", _JUNK_WORDS[j]))
    union_missing = rng.random(m) < noise.missing_field
    seen.unionid[person[has_union & ~junk_union & ~union_missing]] = True
    unionid = _where(junk_union, _strings(_JUNK_WORDS).take(junk_word), w.unionid.take(person))
    unionid = _where(has_union | junk_union, _json_str("unionid", unionid), ',"unionid":null')
    unionid = _null_where(union_missing, unionid)

    auth = name == 6
    phone, _ = _phone_values(rng, w, seen, noise, w.pick_phone(rng, person, 0.2), auth, d, ms)
    phone = _where(auth, _json_str("phone", phone), ',"phone":null')

    sku = w.pick_skus(rng, m)
    cents = w.sku_cents[sku] * rng.integers(1, 4, m)
    page = _strings(_PAGES).take(rng.integers(0, len(_PAGES), m))
    menu = _strings(_OA_MENUS).take(rng.integers(0, len(_OA_MENUS), m))
    props = _props(rng, noise, [  # names: 0 mp_open 1 mp_view_item 2 mp_add_cart 3 mp_pay 5 oa_click
        ("page", _where(name == 5, menu, page), np.isin(name, (0, 5))),
        ("sku", w.sku_id.take(sku), np.isin(name, (1, 2, 3))),
        ("category", _strings(_CATEGORIES).take(w.sku_category[sku]), np.isin(name, (1, 2))),
        ("amount", _yuan(cents), name == 3),
    ])

    corrupt = _pick_corrupt(rng, m, noise.corrupt_line, "wechat")
    ts = _spoil_timestamps(rng, _timestamps(day.isoformat(), ms), corrupt, day)
    event_id = _fixed_width(_tokens(rng, m, 32, b"0123456789abcdef"))
    fields = [_json_str("event_id", event_id, lead=""),
              _json_str("appid", _strings(_WECHAT_APPS).take(app)),
              _json_str("openid", w.openid.take(openid_idx)), unionid, phone,
              _json_str("event_name", _strings(_WECHAT_EVENT_NAMES).take(name)),
              _json_str("event_time", ts), props]
    if w.consent is not None:
        answer = name == 7
        answer_in = w.consent.prompt_in[person]
        good = answer & (corrupt < 0)
        w.consent.prompt_ms[person[good]] = ((w.start - dt.date(1970, 1, 1)).days + d) * 86_400_000 + ms[good]
        fields.append(_where(answer, _json_str("wechat_consent", _where(answer_in, "opt_in", "opt_out")), ""))
    return _Batch(fields, True, corrupt, rng.random((m, 2)))


def _blank(rng: np.random.Generator, values: pa.Array, rate: float,
           keep: np.ndarray | None = None) -> pa.Array:
    """Leave a `rate` share of an optional CSV field empty (never where `keep`)."""
    empty = rng.random(len(values)) < rate
    return _null_where(empty if keep is None else empty & ~keep, values)


def _build_crm(w: _World, seen: _Seen, noise: NoiseRates, d: int, day: dt.date,
               rng: np.random.Generator, intensity: np.ndarray) -> _Batch:
    pat = w.patterns
    if d == 0:  # the first export is a full snapshot of existing members
        rows = np.flatnonzero(w.member & (w.signup_day <= 0))
        dups = np.flatnonzero(pat.dup_day <= 0)
    else:
        changed = (w.signup_day < d) & (rng.random(w.n) < _CRM_UPDATES_PER_DAY
                                        * np.sqrt(intensity))
        rows = np.flatnonzero(w.member & ((w.signup_day == d) | changed))
        rows = np.union1d(rows, pat.rec_a[pat.rec_d1 == d])  # change-of-phone records
        dups = np.flatnonzero(pat.dup_day == d)
    person = np.r_[rows, pat.dup_person[dups]]
    dup = np.r_[np.full(rows.size, -1, np.int64), dups]  # the second membership of a row, or -1
    ms = _ms_of_day(rng, person.size, _HOURS_OFFICE)
    # Recycled numbers: A's record at the change, B's registration; A's snapshot row shows X.
    fixed = np.zeros(person.size, bool)
    if pat.rec_a.size:
        first = dup < 0
        for who, on, at in ((pat.rec_a, pat.rec_d1, pat.rec_change_ms), (pat.rec_b, pat.rec_d2, pat.rec_reg_ms)):
            hit = first & np.isin(person, who[on == d])
            order = np.argsort(who)
            ms[hit] = at[order][np.searchsorted(who[order], person[hit])]
            fixed |= hit
        if d == 0:
            fixed |= (dup < 0) & np.isin(person, pat.rec_a)
    ms, person, dup, fixed = _sort_by_time(ms, person, dup, fixed)
    m = person.size
    second = dup >= 0
    of = np.maximum(dup, 0)  # index into the second memberships where `second`
    seen.member_id[person[~second]] = True
    seen.dup_member_id[dup[second]] = True
    updated = _timestamps(day.isoformat(), ms)
    signup = w.signup_day[person].astype(np.int64)
    if second.any():
        signup = np.where(second, pat.dup_day[of], signup)
    created_today = signup == d
    registered = _timestamps(_dates((w.start - dt.date(1970, 1, 1)).days + signup),
                             rng.integers(0, 86_400_000, m))
    registered = _where(created_today, updated, registered)

    phone_missing = rng.random(m) < noise.missing_field
    verified = fixed | second  # a second membership was registered with the verified phone
    phone_idx = w.pick_phone(rng, person, 0.15)
    if second.any():
        phone_idx = np.where(second, w.phone_start[person], phone_idx)
    phone, _ = _phone_values(rng, w, seen, noise, phone_idx, ~phone_missing | verified, d, ms, verified)

    email = w.email.take(person)
    junk = rng.random(m) < noise.junk_identifier
    email_missing = rng.random(m) < noise.missing_field
    own_mail = np.ones(m, bool)  # the person's e-mail, not a second membership's other one
    if second.any():
        kind = np.where(second, pat.dup_email_kind[of], 0)
        own_mail = kind != 1
        email = _null_where(kind == 2, _where(own_mail, email, pat.dup_email.take(of)))
    if junk.any():
        seen.junk.add(("email", JUNK_IDENTIFIERS["email"][0]))
    has_email = pc.is_valid(email).to_numpy(zero_copy_only=False)
    seen.email[person[has_email & ~junk & ~email_missing & own_mail]] = True
    seen.dup_email[dup[has_email & ~junk & ~email_missing & ~own_mail]] = True
    email = _where(junk, "test@test.com", email)
    variant = rng.integers(0, 4, m)
    styled = pc.choose(pa.array(variant, pa.int8()), pc.utf8_upper(email),
                       pc.utf8_capitalize(email), _cat(" ", email, " "), _cat(email, " "))
    email = _where(rng.random(m) < noise.email_format_variant, styled, email)
    email = _null_where(email_missing, email)

    # Members who signed up in the app or the mini-program have those accounts bound in the CRM
    # (a second membership was made elsewhere: nothing bound).
    bound_login = w.has_login[person] & (rng.random(m) < _CRM_BINDS_LOGIN) & ~second
    bound_union = w.has_unionid[person] & (rng.random(m) < _CRM_BINDS_UNIONID) & ~second
    seen.login_id[person[bound_login]] = True
    seen.unionid[person[bound_union]] = True
    login_id = _null_where(~bound_login, w.login_id.take(person))
    unionid = _null_where(~bound_union, w.unionid.take(person))

    name = w.name.take(person)
    typo = rng.random(m) < noise.name_typo
    member_id, tier = w.member_id.take(person), _strings(_TIERS).take(w.tier[person])
    if second.any():
        name = _where(second, pat.dup_name.take(of), name)
        typo &= ~(second & pat.dup_pinyin[of])
        member_id = _where(second, pat.dup_member_id.take(of), member_id)
        tier = _where(second, _TIERS[0], tier)
    if typo.any():
        wrong = w.name_chars.take(rng.integers(0, len(w.name_chars), m))
        name = _where(typo, _cat(pc.utf8_slice_codeunits(name, 0, -1), wrong), name)

    corrupt = _pick_corrupt(rng, m, noise.corrupt_line, "crm")
    corrupt[fixed] = -1  # the records that date a re-issued number stay readable
    keep = second if second.any() else None  # a second membership's form is complete
    fields = [
        member_id,
        _blank(rng, name, noise.missing_field, keep),
        phone,
        email,
        login_id,
        unionid,
        _blank(rng, _strings(("M", "F")).take(w.gender[person]), noise.missing_field, keep),
        _blank(rng, _dates(w.birthday[person]), noise.missing_field, keep),
        _blank(rng, _strings([c for c, _ in _CITIES]).take(w.city[person]), noise.missing_field, keep),
        tier,
        registered,
        _spoil_timestamps(rng, updated, corrupt, day),
    ]
    aux = rng.random((m, 2))
    if w.consent is None:
        return _Batch(fields, False, corrupt, aux)
    fields += _crm_consent(w, d, person, second, created_today, ms, corrupt)
    return _Batch(fields, False, corrupt, aux, CONSENT_COLUMNS["crm"])


def _build_orders(w: _World, seen: _Seen, noise: NoiseRates, d: int, day: dt.date,
                  rng: np.random.Generator, intensity: np.ndarray) -> _Batch:
    mean_propensity = _PROPENSITY_AB[0] / sum(_PROPENSITY_AB)
    counts = rng.poisson(_ORDERS_PER_DAY * intensity * w.propensity / mean_propensity)
    person = np.repeat(np.arange(w.n), counts)
    ms = w.patterns.not_before_registration(d, person, _ms_of_day(rng, person.size, _HOURS_ONLINE))
    ms, person = _sort_by_time(ms, person)
    m = person.size

    n_items = rng.choice([1, 2, 3], size=m, p=[0.6, 0.3, 0.1])
    sku = w.pick_skus(rng, int(n_items.sum()))
    qty = rng.choice([1, 2, 3], size=sku.size, p=[0.8, 0.15, 0.05])
    offsets = np.r_[0, np.cumsum(n_items)]
    items = pc.binary_join(pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), _cat(w.sku_id.take(sku), ":", _int_strings(qty))), "|")
    cents = np.add.reduceat(w.sku_cents[sku] * qty, offsets[:-1]) if m else np.zeros(0, np.int64)
    category = _strings(_CATEGORIES).take(w.sku_category[sku[offsets[:-1]]])

    with_member = w.member[person] & (w.signup_day[person] <= d) & (rng.random(m) < 0.9)
    with_phone = ~with_member | (rng.random(m) < 0.4)
    drop = with_member & with_phone & (rng.random(m) < noise.missing_field)
    drop_phone = drop & (rng.random(m) < 0.5)
    with_member &= ~(drop & ~drop_phone)
    with_phone &= ~drop_phone
    pat = w.patterns
    second = np.zeros(m, bool)
    if pat.dup_of is not None:  # a duplicate member orders with either card from the day after both exist
        dup = pat.dup_of[person]
        second = (with_member & (dup >= 0) & (pat.dup_day[np.maximum(dup, 0)] < d)
                  & (rng.random(m) < _SECOND_MEMBER_USE))
        seen.dup_member_id[dup[second]] = True
    seen.member_id[person[with_member & ~second]] = True
    member_id = _null_where(~with_member, w.member_id.take(person))
    if second.any():
        member_id = pc.replace_with_mask(member_id, pa.array(second), pat.dup_member_id.take(dup[second]))
    phone_idx = w.pick_phone(rng, person, 0.2)
    typed = np.zeros(m, bool)
    if pat.partner_slot is not None:  # the receiver's phone: the partner's
        partner = pat.partner_slot[person]
        typed = (partner >= 0) & (rng.random(m) < _PARTNER_PHONE_USE)
        typed &= intensity[w.phone_owner[np.maximum(partner, 0)]] > 0  # a partner who is a customer now
        phone_idx, with_phone = np.where(typed, partner, phone_idx), with_phone | typed
    phone, written = _phone_values(rng, w, seen, noise, phone_idx, with_phone, d, ms)
    seen.patterns["partner_phone_orders"] += int((typed & written).sum())

    corrupt = _pick_corrupt(rng, m, noise.corrupt_line, "orders")
    fields = [
        _cat("O", day.strftime("%Y%m%d"), _int_strings(np.arange(1, m + 1), 8)),
        member_id, phone, items,
        _spoil_amounts(rng, _yuan(cents), corrupt),
        _spoil_timestamps(rng, _timestamps(day.isoformat(), ms), corrupt, day),
        _blank(rng, category, noise.missing_field),
    ]
    return _Batch(fields, False, corrupt, rng.random((m, 2)))


def _build_pos(w: _World, seen: _Seen, noise: NoiseRates, d: int, day: dt.date,
               rng: np.random.Generator, intensity: np.ndarray) -> _Batch:
    mean_propensity = _PROPENSITY_AB[0] / sum(_PROPENSITY_AB)
    counts = rng.poisson(_POS_PER_DAY * intensity * w.pos_shopper * w.propensity / mean_propensity)
    person = np.repeat(np.arange(w.n), counts)
    ms = w.patterns.not_before_registration(d, person, _ms_of_day(rng, person.size, _HOURS_STORE))
    ms, person = _sort_by_time(ms, person)
    m = person.size
    store = np.where(rng.random(m) < 0.85, w.home_store[person],
                     rng.integers(0, len(w.store_id), m))
    phone_idx = w.pick_phone(rng, person, 0.1)
    clerk = rng.random(m) < noise.clerk_phone
    clerk_phone = w.phone_start[w.store_clerk[store]]
    phone_idx = np.where(clerk, clerk_phone, phone_idx)
    present = clerk | (rng.random(m) < _POS_GIVES_PHONE)
    present &= ~(rng.random(m) < noise.missing_field)
    pat = w.patterns
    typed = walk_in = np.zeros(m, bool)
    if pat.partner_slot is not None:
        partner = pat.partner_slot[person]
        typed = ~clerk & (partner >= 0) & (rng.random(m) < _PARTNER_PHONE_USE)
        typed &= intensity[w.phone_owner[np.maximum(partner, 0)]] > 0
        phone_idx, present = np.where(typed, partner, phone_idx), present | typed
    if pat.store_slot is not None:  # walk-ins who give no phone: the cashier types the store's
        store_phone = pat.store_slot[store]
        walk_in = ~present & (store_phone >= 0) & (rng.random(m) < _STORE_PHONE_USE)
        phone_idx, present = np.where(walk_in, store_phone, phone_idx), present | walk_in
    phone, written = _phone_values(rng, w, seen, noise, phone_idx, present, d, ms)
    seen.phone_shared[clerk_phone[clerk & written]] = True
    if walk_in.any():
        seen.phone_shared[store_phone[walk_in & written]] = True
    seen.patterns["partner_phone_orders"] += int((typed & written).sum())
    seen.patterns["store_phone_transactions"] += int((walk_in & written).sum())
    cents = np.maximum(np.round(rng.lognormal(np.log(150), 0.8, m) * 100), 100).astype(np.int64)

    corrupt = _pick_corrupt(rng, m, noise.corrupt_line, "pos")
    fields = [
        _cat("T", day.strftime("%Y%m%d"), _int_strings(np.arange(1, m + 1), 8)),
        w.store_id.take(store), phone,
        _spoil_amounts(rng, _yuan(cents), corrupt),
        _spoil_timestamps(rng, _timestamps(day.isoformat(), ms), corrupt, day),
    ]
    return _Batch(fields, False, corrupt, rng.random((m, 2)))


def _build_ad_leads(w: _World, seen: _Seen, noise: NoiseRates, d: int, day: dt.date,
                    rng: np.random.Generator, intensity: np.ndarray) -> _Batch:
    recent = (d - w.signup_day >= 0) & (d - w.signup_day < 7)
    counts = rng.poisson(_LEADS_PER_DAY * (intensity > 0) * (1 + 5 * recent))
    person = np.repeat(np.arange(w.n), counts)
    ms = w.patterns.not_before_registration(d, person, _ms_of_day(rng, person.size, _HOURS_ONLINE))
    ms, person = _sort_by_time(ms, person)
    m = person.size
    phone, _ = _phone_values(rng, w, seen, noise, w.pick_phone(rng, person, 0.15),
                              np.ones(m, bool), d, ms)
    store = _null_where(rng.random(m) >= 0.35, w.store_id.take(w.home_store[person]))

    corrupt = _pick_corrupt(rng, m, noise.corrupt_line, "ad_leads")
    fields = [
        _cat("L", day.strftime("%Y%m%d"), _int_strings(np.arange(1, m + 1), 8)),
        phone,
        _blank(rng, _strings(_CAMPAIGNS).take(rng.integers(0, len(_CAMPAIGNS), m)),
               noise.missing_field),
        _strings(_AD_PLATFORMS).take(rng.integers(0, len(_AD_PLATFORMS), m)),
        store,
        _spoil_timestamps(rng, _timestamps(day.isoformat(), ms), corrupt, day),
    ]
    return _Batch(fields, False, corrupt, rng.random((m, 2)))


LATE_ARRIVAL_CHANNELS = ("app_events", "pos")

_BUILDERS = {
    "app_events": _build_app_events,
    "wechat": _build_wechat,
    "crm": _build_crm,
    "orders": _build_orders,
    "pos": _build_pos,
    "ad_leads": _build_ad_leads,
}


# ---------------------------------------------------------------- writing


# CSV columns holding identifiers: a wrong-column-count line never loses these, so every
# identifier listed in the truth is still somewhere in the files.
_ID_COLUMNS = {"crm": {0, 2, 3, 4, 5}, "orders": {1, 2}, "pos": {2}, "ad_leads": {1}}


_SPLIT_SHARE = 0.5  # of truncated JSON records: split in two lines rather than cut short


def _misalign(cols: list[str], id_columns: set[int] | frozenset[int], u: float, v: float) -> list[str]:
    """Drop one non-identifier field (never the first), or repeat one field."""
    cols = list(cols)
    if v < 0.5:
        droppable = [i for i in range(1, len(cols)) if i not in id_columns]
        del cols[droppable[int(u * len(droppable))]]
    else:
        at = 1 + int(u * (len(cols) - 1))
        cols.insert(at, cols[at - 1])
    return cols


def _corrupt_counts(channel: str, corrupt: np.ndarray, split: int) -> dict[str, int]:
    """Corrupt rows by kind; each split record adds one more truncated row."""
    counts = np.bincount(corrupt[corrupt >= 0], minlength=len(_KIND_NAMES))
    counts[_TRUNCATED] += split
    return {k: int(counts[_KIND_NAMES.index(k)]) for k in CORRUPT_KINDS[channel]}


def _break_lines(channel: str, lines: pa.Array, corrupt: np.ndarray,
                 aux: np.ndarray) -> tuple[pa.Array, int]:
    """Truncate/split JSON records after their identifiers, or drop/repeat a CSV column.

    Returns the new lines and how many physical lines splitting added.
    """
    idx = np.flatnonzero((corrupt == _TRUNCATED) | (corrupt == _WRONG_COLUMNS))
    if not idx.size:
        return lines, 0
    extra = 0
    broken = []
    for text, kind, (u, v) in zip(lines.take(idx).to_pylist(), corrupt[idx], aux[idx], strict=True):
        text = text[:-1]
        if kind == _TRUNCATED:
            keep = text.index(',"event_name"')
            cut = keep + int(u * (len(text) - 1 - keep))
            split = v < _SPLIT_SHARE  # the writer died mid-record, or a raw newline split it in two
            extra += split
            broken.append(text[:cut] + "\n" + text[cut:] + "\n" if split else text[:cut] + "\n")
        else:
            broken.append(",".join(_misalign(text.split(","), _ID_COLUMNS[channel], u, v)) + "\n")
    mask = np.zeros(len(lines), bool)
    mask[idx] = True
    return pc.replace_with_mask(lines, pa.array(mask), pa.array(broken, pa.string())), extra


def _write_lines(path: Path, header: str | None, lines: pa.Array) -> None:
    with open(path, "wb") as f:
        if header:
            f.write(header.encode())
        if len(lines):
            offset_type = np.int64 if pa.types.is_large_string(lines.type) else np.int32
            offsets = np.frombuffer(lines.buffers()[1], offset_type)
            first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
            f.write(memoryview(lines.buffers()[2])[first:last])


def _write_batch(landing: Path, channel: str, day: dt.date, batch: _Batch, late: np.ndarray | None = None,
                 late_in: pa.Array | None = None) -> tuple[list[FileStats], pa.Array | None]:
    """Write a channel-day's files. `late`: per record, held back for the next day's delivery (returned
    as lines); `late_in`: the day before's held-back lines, appended to this day's last file."""
    folder = landing / channel / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    ext = EXTENSIONS[channel]
    header = ",".join((*CSV_HEADERS[channel], *batch.extra_columns)) + "\n" if channel in CSV_HEADERS else None
    limit = MAX_LINES_PER_FILE
    stats, held = [], []
    parts = max(1, math.ceil(len(batch) / limit))
    for part in range(parts):
        a, b = part * limit, min(len(batch), (part + 1) * limit)
        corrupt, aux, lines = batch.corrupt[a:b], batch.aux[a:b], batch.lines(a, b)
        if late is not None:
            keep = ~late[a:b]
            held.append(lines.filter(pa.array(late[a:b])))
            lines, corrupt, aux = lines.filter(pa.array(keep)), corrupt[keep], aux[keep]
        lines, extra = _break_lines(channel, lines, corrupt, aux)
        arrived = len(late_in) if part == parts - 1 and late_in is not None else 0
        if arrived:
            lines = pa.concat_arrays([lines, late_in.cast(lines.type)])
        path = folder / f"part-{part:05d}.{ext}"
        _write_lines(path, header, lines)
        n = corrupt.size + extra + arrived
        stats.append(FileStats(path=path.relative_to(landing).as_posix(), lines=n, records=n,
                               corrupt_lines=_corrupt_counts(channel, corrupt, extra), late_arrivals=arrived))
    return stats, (pa.concat_arrays(held) if held else None)


def _pick_duplicate(start: dt.date, days: int, seed: int,
                    per_file: dict[str, list[FileStats]]) -> tuple[str, FileStats, dt.date]:
    """The channel file delivered twice, and the later day (the same if days=1) it lands again."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 100, 0]))

    def day_of(f: FileStats) -> int:
        return (dt.date.fromisoformat(f.path.split("/")[1]) - start).days

    files = [(ch, f) for ch in CHANNELS for f in per_file[ch] if days == 1 or day_of(f) < days - 1]
    files = [(ch, f) for ch, f in files if f.lines] or files
    channel, original = files[int(rng.integers(len(files)))]
    d = day_of(original)
    return channel, original, start + dt.timedelta(days=d if days == 1 else int(rng.integers(d + 1, days)))


def _write_duplicate(landing: Path, stats: ChannelStats, original: FileStats, day: dt.date) -> None:
    """Copy a file byte-for-byte to `part-NNNNN-resend.<ext>` in the folder of `day`."""
    folder, name = original.path.split("/")[0], original.path.rsplit("/", 1)[1]
    stem, ext = name.rsplit(".", 1)
    target = landing / folder / day.isoformat() / f"{stem}-resend.{ext}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(landing / original.path, target)
    copy = original.model_copy(update={"path": target.relative_to(landing).as_posix()}, deep=True)
    stats.per_file.append(copy)
    stats.duplicate_files.append(DuplicateFile(original=original.path, duplicate=copy.path))


_KINDS = ("personal", "shared", "recycled")  # identities.csv kinds of owned identifiers (junk: no owner)


def _write_truth(landing: Path, w: _World, seen: _Seen, noise: NoiseRates) -> dict[str, int]:
    folder = landing / "_truth"
    folder.mkdir(parents=True, exist_ok=True)
    pat = w.patterns
    rows = []  # (id_type, values, person index array, index into _KINDS)
    by_person = {"email": w.email, "login_id": w.login_id, "member_id": w.member_id,
                 "unionid": w.unionid}
    second = {"email": (seen.dup_email, pat.dup_email), "member_id": (seen.dup_member_id, pat.dup_member_id)}
    for id_type in _ID_TYPES:
        if id_type == "phone":
            written = seen.phone.copy()
            written[pat.rec_x] = False  # a re-issued X is listed once, as its current owner's (B's slot)
            i = np.flatnonzero(written)
            kind = seen.phone_shared[i].astype(np.int8)
            kind[np.isin(i, pat.rec_bx)] = 2
            rows.append((id_type, _cat("+86", w.phone.take(i)), w.phone_owner[i], kind))
        elif id_type == "device_id":
            i = np.flatnonzero(seen.device)
            rows.append((id_type, w.device.take(i), w.device_owner[i], seen.device_shared[i].astype(np.int8)))
        elif id_type == "openid":
            i = np.flatnonzero(seen.openid)
            rows.append((id_type, w.openid.take(i), i // 2, np.zeros(i.size, np.int8)))
        else:
            i = np.flatnonzero(getattr(seen, id_type))
            rows.append((id_type, by_person[id_type].take(i), i, np.zeros(i.size, np.int8)))
            if id_type in second:  # a second membership's id, its other e-mail
                used, values = second[id_type]
                j = np.flatnonzero(used)
                rows.append((id_type, values.take(j), pat.dup_person[j], np.zeros(j.size, np.int8)))
    counts = dict.fromkeys((*_KINDS, "junk"), 0)
    parts = []
    for id_type, values, person, kind in rows:
        parts.append(_cat(id_type, ",", values, ",", w.person_key.take(person), ",",
                          _strings(_KINDS).take(kind), "\n"))
        for k, name in enumerate(_KINDS):
            counts[name] += int((kind == k).sum())
    junk = sorted(seen.junk, key=lambda t: (_ID_TYPES.index(t[0]), t[1]))
    counts["junk"] = len(junk)
    parts.append(_strings([f"{t},{v},,junk\n" for t, v in junk]))
    lines = pa.concat_arrays([p.cast(pa.large_string()) for p in parts])
    _write_lines(folder / "identities.csv", "id_type,id_value,person_key,kind\n", lines)

    def fixed6(x: np.ndarray) -> pa.Array:
        micro = np.round(x * 1_000_000).astype(np.int64)
        return _cat(_int_strings(micro // 1_000_000), ".", _int_strings(micro % 1_000_000, 6))

    epoch = (w.start - dt.date(1970, 1, 1)).days
    churned = w.churn_day != _NEVER
    people = _cat(w.person_key, ",", fixed6(w.activity), ",", fixed6(w.propensity), ",",
                  _where(churned, _dates(epoch + np.where(churned, w.churn_day, 0)), ""), ",",
                  _dates(epoch + w.signup_day.astype(np.int64)), ",", w.household_key, "\n")
    _write_lines(folder / "people.csv",
                 "person_key,activity,propensity,churn_date,signup_date,household_key\n", people)
    if noise.recycled_phone > 0:
        _write_ownership(folder, w)
    if noise.duplicate_membership > 0:
        duplicates = _cat(w.person_key.take(pat.dup_person), ",", w.member_id.take(pat.dup_person), ",",
                          pat.dup_member_id, "\n")
        _write_lines(folder / "duplicate_members.csv", "person_key,member_id,second_member_id\n", duplicates)
    if w.consent is not None:
        _write_consent_truth(folder, w)
    return counts


def _write_consent_truth(folder: Path, w: _World) -> None:
    """consent.csv: per person and channel, the latest statement a readable record made (the CRM's, or for
    wechat the mini-program's answer when later; on a tie the opt-out), as gold_consent should hold it."""
    c = w.consent
    parts = []
    crm_person = np.flatnonzero(c.readable)
    for k, channel in enumerate(CONSENT_CHANNELS):
        status = c.status[crm_person, k].astype(np.int8)
        when = np.where(status >= 0, c.ms[crm_person], -1)
        source = np.zeros(crm_person.size, np.int8)  # 0 crm, 1 wechat
        where = c.source[crm_person].astype(np.int64)
        person = crm_person
        if channel == "wechat":
            by_person = np.full((w.n, 4), -1, np.int64)  # status, ms, source, consent source
            by_person[person, 0], by_person[person, 1], by_person[person, 3] = status, when, where
            by_person[person, 2] = 0
            wx = np.flatnonzero(c.prompt_ms >= 0)
            wx_status = c.prompt_in[wx].astype(np.int64)
            later = (c.prompt_ms[wx] > by_person[wx, 1]) | ((c.prompt_ms[wx] == by_person[wx, 1]) & (wx_status == 0))
            wx = wx[later]
            by_person[wx, 0], by_person[wx, 1] = c.prompt_in[wx].astype(np.int64), c.prompt_ms[wx]
            by_person[wx, 2], by_person[wx, 3] = 1, CONSENT_SOURCES.index("mini_program")
            person = np.flatnonzero(by_person[:, 1] >= 0)
            status, when = by_person[person, 0].astype(np.int8), by_person[person, 1]
            source, where = by_person[person, 2].astype(np.int8), by_person[person, 3]
        keep = status >= 0
        person, status, when, source, where = person[keep], status[keep], when[keep], source[keep], where[keep]
        parts.append(_cat(w.person_key.take(person), f",{channel},", _strings(("opt_out", "opt_in")).take(status), ",",
                          _local_timestamps(when), ",", _strings(("crm", "wechat")).take(source), ",",
                          _strings(CONSENT_SOURCES).take(where), "\n"))
    lines = pa.concat_arrays([x.cast(pa.large_string()) for x in parts])
    _write_lines(folder / "consent.csv", "person_key,channel,status,consent_time,source,consent_source\n", lines)


def _write_ownership(folder: Path, w: _World) -> None:
    """ownership.csv: each re-issued number's two owners and when each held it (UTC, ms; open ends empty)."""
    pat, epoch = w.patterns, (w.start - dt.date(1970, 1, 1)).days
    lines = []
    for a, b, x, d1, t1, d2, t2 in zip(pat.rec_a, pat.rec_b, pat.rec_x, pat.rec_d1, pat.rec_change_ms,
                                       pat.rec_d2, pat.rec_reg_ms, strict=True):
        phone = "+86" + w.phone[int(x)].as_py()
        change = _utc_iso(int((epoch + d1) * 86_400_000 + t1 - _CHINA_OFFSET_MS))
        registered = _utc_iso(int((epoch + d2) * 86_400_000 + t2 - _CHINA_OFFSET_MS))
        lines += [f"phone,{phone},{w.person_key[int(a)].as_py()},,{change}\n",
                  f"phone,{phone},{w.person_key[int(b)].as_py()},{registered},\n"]
    _write_lines(folder / "ownership.csv", "id_type,id_value,person_key,valid_from,valid_to\n",
                 pa.array(lines, pa.string()))


# ---------------------------------------------------------------- real-world exports (format "real")

# The sources of conf/sources.yaml that format "real" writes: source -> the channel it carries.
SOURCES: dict[str, str] = {
    "sensors_app": "app_events", "segment_web": "app_events", "wechat_export": "wechat",
    "crm_excel": "crm", "shop_orders": "orders", "pos_export": "pos", "leads_export": "ad_leads",
}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CHINA_OFFSET_MS = 8 * 3_600_000  # generated times are China time, +08:00
_MS = dt.timedelta(milliseconds=1)
_SENSORS_EVENTS = {"app_start": "$AppStart", "page_view": "$AppViewScreen"}
_SENSORS_LIB = {"ios": ("iOS", "4.5.2"), "android": ("Android", "6.8.0")}  # $os and $lib, $lib_version
_SENSORS_SERVER_LIB = ("python", "3.6.4")  # rows without $os were imported by the server-side SDK
_APP_VERSION = "3.2.1"
_WECHAT_SCENES = (1001, 1007, 1011, 1035, 1089)  # search, shared card, QR code, OA menu, recent list
_CRM_GENDER = {"M": "男", "F": "女", "": ""}
_CRM_TIER = {"normal": "普通", "silver": "银卡", "gold": "金卡", "platinum": "白金"}
_CRM_CONSENT = {"opt_in": "同意", "opt_out": "拒绝", "": ""}
_CRM_CONSENT_SOURCE = {"store": "门店", "app": "APP", "mini_program": "小程序", "web": "官网", "call_center": "客服", "": ""}
_CRM_REMARKS = ('VIP客户, 喜欢"新品"\n电话回访', "老客户，偏好门店自提", "投诉过物流, 已补偿优惠券",
                '会员日"满减"活动参与者', "生日当月赠礼", "勿电话打扰\n只接受短信")
_SHOP_NAMES = ("官方旗舰店", "天猫旗舰店", "京东自营店", "抖音小店")
_FULLWIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")


def _epoch_ms(ts: str) -> int:
    return (dt.datetime.fromisoformat(ts) - _EPOCH) // _MS


def _utc_iso(ms: int) -> str:
    """`2026-11-01T01:15:02.123Z`."""
    return f"{_EPOCH + ms * _MS:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _local_naive(ts: str) -> str:
    """`yyyy-MM-dd HH:mm:ss.SSS`: the wall clock of a generated `...+08:00` timestamp."""
    return f"{ts[:10]} {ts[11:23]}"


def _thousands(amount: str) -> str:
    """`1299.00` -> `1,299.00`."""
    whole, cents = amount.split(".")
    return f"{int(whole):,}.{cents}"


def _numeric_amount(props: dict) -> dict:
    """SDKs send numbers as JSON numbers: `"amount":"129.90"` -> `"amount":129.9`."""
    return {k: float(v) if k == "amount" else v for k, v in props.items()}


def _sensors(rec: dict, kind: int, draw: np.ndarray, noise: NoiseRates) -> dict:
    """A Sensors Analytics track event."""
    device, login, platform = rec["device_id"], rec.get("login_id"), rec.get("platform")
    track_id = int(rec["event_id"].replace("-", "")[:8], 16) & 0x7FFFFFFF or 1
    identities = {key: rec[f] for key, f in (("$identity_login_id", "login_id"), ("$identity_mobile", "phone"),
                                             ("$identity_mp_unionid", "unionid")) if rec.get(f) is not None}
    if platform in _SENSORS_LIB:
        lib, version = _SENSORS_LIB[platform]
        properties = {"$os": lib, "$lib": lib}
    else:
        lib, version = _SENSORS_SERVER_LIB
        properties = {"$lib": lib}
    properties |= {"$device_id": device, "$is_login_id": login is not None, "$app_version": _APP_VERSION}
    properties |= _numeric_amount(rec["props"])
    return {
        "_track_id": track_id,
        "time": rec["event_time"] if kind == _BAD_TIMESTAMP else _epoch_ms(rec["event_time"]),
        "type": "track", "distinct_id": device if login is None else login, "anonymous_id": device,
        "event": _SENSORS_EVENTS.get(rec["event_name"], rec["event_name"]), "identities": identities,
        "lib": {"$lib": lib, "$lib_version": version}, "properties": properties,
    }


def _segment(rec: dict, kind: int, draw: np.ndarray, noise: NoiseRates) -> dict:
    """A Segment spec page (page views) or track call, as analytics.js sends it."""
    props = rec["props"]
    out = {"messageId": rec["event_id"], "type": "page" if rec["event_name"] == "page_view" else "track",
           "anonymousId": rec["device_id"], "userId": rec.get("login_id")}
    if out["type"] == "track":
        out["event"] = rec["event_name"]
    elif "page" in props:
        out["name"] = props["page"]
    if kind == _BAD_TIMESTAMP:
        out["timestamp"] = rec["event_time"]
    else:
        ms = _epoch_ms(rec["event_time"])
        sent = ms + 5 + int(draw[0] * 200)
        out |= {"timestamp": _utc_iso(ms), "sentAt": _utc_iso(sent),
                "receivedAt": _utc_iso(sent + 20 + int(draw[1] * 300))}
    context: dict = {"library": {"name": "analytics.js", "version": "4.1.0"}}
    traits = {k: rec[k] for k in ("phone", "unionid") if rec.get(k) is not None}
    if traits:
        context["traits"] = traits
    context["page"] = {"path": "/" + props.get("page", "")}
    return out | {"context": context, "properties": _numeric_amount(props)}


def _wechat_export(rec: dict, kind: int, draw: np.ndarray, noise: NoiseRates) -> dict:
    """The mini-program backend's log line: its own key order, naive local time, SDK keys."""
    time = rec["event_time"] if kind == _BAD_TIMESTAMP else _local_naive(rec["event_time"])
    out = {"event_time": time, "appid": rec["appid"], "openid": rec["openid"]}
    out |= {k: rec[k] for k in ("unionid", "phone") if k in rec}
    out |= {"event_name": rec["event_name"], "event_id": rec["event_id"], "sdk_ver": "2.31.0",
            "scene": _WECHAT_SCENES[int(draw[0] * len(_WECHAT_SCENES))], "props": rec["props"]}
    return out | ({"wechat_consent": rec["wechat_consent"]} if "wechat_consent" in rec else {})


def _crm_excel(row: dict, kind: int, draw: np.ndarray, noise: NoiseRates) -> list[str]:
    phone, email = row["phone"], row["email"]
    if phone and draw[0] < noise.fullwidth_phone:
        phone = phone.translate(_FULLWIDTH_DIGITS)
    if email and draw[1] < noise.fullwidth_email:
        email = email.replace("@", "＠")
    remark = _CRM_REMARKS[int(draw[3] * len(_CRM_REMARKS))] if draw[2] < noise.crm_remark else ""
    updated = row["updated_at"] if kind == _BAD_TIMESTAMP else _local_naive(row["updated_at"])
    consent = []
    if "consent_source" in row:
        consent = [_CRM_CONSENT[row[f]] for f in CRM_CONSENT_FIELDS.values()]
        consent += [_local_naive(row["consent_time"]) if row["consent_time"] else "",
                    _CRM_CONSENT_SOURCE[row["consent_source"]]]
    return [row["member_id"], row["name"], _CRM_GENDER[row["gender"]], row["birthday"].replace("-", "/"),
            phone, email, row["city"], _CRM_TIER[row["tier"]], row["login_id"], row["unionid"],
            _local_naive(row["registered_at"]) if row["registered_at"] else "", updated, *consent, remark]


def _shop_orders(row: dict, kind: int, draw: np.ndarray, noise: NoiseRates) -> list[str]:
    paid = row["paid_time"] if kind == _BAD_TIMESTAMP else _utc_iso(_epoch_ms(row["paid_time"]))
    amount = row["amount"] if kind == _BAD_AMOUNT else _thousands(row["amount"])
    return [row["order_id"], paid, row["member_id"], row["phone"], amount, row["items"], row["category"],
            _SHOP_NAMES[int(draw[0] * len(_SHOP_NAMES))]]


def _pos_export(row: dict, kind: int, draw: np.ndarray, noise: NoiseRates) -> list[str]:
    txn_time = row["txn_time"] if kind == _BAD_TIMESTAMP else str(_epoch_ms(row["txn_time"]))
    amount = row["amount"] if kind == _BAD_AMOUNT else "¥" + _thousands(row["amount"])
    return [row["txn_id"], row["store_id"], row["member_phone"], amount, txn_time]


def _leads_export(row: dict, kind: int, draw: np.ndarray, noise: NoiseRates) -> list[str]:
    created = row["created_at"] if kind == _BAD_TIMESTAMP else str(_epoch_ms(row["created_at"]))
    return [row["lead_id"], created, row["phone"], row["campaign"], row["ad_platform"], row["booking_store"]]


def _sensors_key(rec: dict) -> tuple[str, ...]:
    return (f"{rec['distinct_id']}-{rec['time']}-{rec['_track_id']}",)


@dataclass(frozen=True)
class _Export:
    """How one source writes a record: JSON lines, or CSV with its system's conventions."""

    convert: Callable[[dict, int, np.ndarray, NoiseRates], dict | list[str]]
    key: Callable[[dict | list[str]], tuple[str, ...]]  # of a good converted record, as written
    keep_before: str = ""  # JSON: a truncated record keeps its identifiers, which come before this
    encoding: str = "utf-8"
    bom: str = ""
    delimiter: str = ","
    newline: str = "\n"
    quoting: int = csv.QUOTE_MINIMAL
    header: tuple[str, ...] = ()
    id_columns: frozenset[int] = frozenset()  # CSV: fields a wrong-column-count row never loses
    consent_header: tuple[str, ...] = ()  # CSV: the consent columns' names, before the header's last column

    @property
    def is_json(self) -> bool:
        return bool(self.keep_before)


_EXPORTS: dict[str, _Export] = {
    "sensors_app": _Export(_sensors, _sensors_key, keep_before=',"lib":{'),
    "segment_web": _Export(_segment, lambda rec: (rec["messageId"],), keep_before=',"page":{"path":'),
    "wechat_export": _Export(_wechat_export, lambda rec: (rec["event_id"],), keep_before=',"event_name":'),
    "crm_excel": _Export(
        _crm_excel, lambda cols: (cols[0], cols[11]), encoding="gb18030", newline="\r\n",
        header=("会员编号", "姓名", "性别", "生日", "手机号", "邮箱", "城市", "会员等级", "APP账号",
                "微信UnionID", "注册时间", "更新时间", "备注"),
        id_columns=frozenset({0, 4, 5, 8, 9}),
        consent_header=("短信营销", "微信营销", "邮件营销", "广告营销", "授权时间", "授权渠道")),
    "shop_orders": _Export(
        _shop_orders, lambda cols: (cols[0],), bom="\ufeff", newline="\r\n", quoting=csv.QUOTE_ALL,
        header=("order_id", "pay_time", "member_id", "phone", "order_amount", "items", "category",
                "shop_name"),
        id_columns=frozenset({0, 2, 3})),
    # Python's "utf-16" writes the platform's byte order; Excel's "Unicode text" is little-endian.
    "pos_export": _Export(
        _pos_export, lambda cols: (cols[0],), encoding="utf-16-le", bom="\ufeff", delimiter="\t",
        newline="\r\n",
        header=("txn_id", "store_id", "member_phone", "amount", "txn_time"), id_columns=frozenset({2})),
    "leads_export": _Export(_leads_export, lambda cols: (cols[0],), delimiter=";", id_columns=frozenset({2})),
}


def _source_of(channel: str, rec: dict) -> str:
    if channel == "app_events":
        return "segment_web" if rec.get("platform") == "web" else "sensors_app"
    return next(s for s, ch in SOURCES.items() if ch == channel)


def _truncate_json(text: str, keep_before: str, u: float, v: float) -> tuple[str, int]:
    """Cut a JSON record after its identifiers, or split it there in two lines (returns 1 then)."""
    keep = text.index(keep_before)
    cut = keep + int(u * (len(text) - 1 - keep))
    if text[cut] == "{":  # a half starting with `{` could pass for a whole object to a lax reader
        cut += 1
    if v < _SPLIT_SHARE:
        return text[:cut] + "\n" + text[cut:], 1
    return text[:cut], 0


_Row = tuple[dict | list[str], int, np.ndarray]  # a converted record, its corrupt kind, aux uniforms


def _write_export(landing: Path, source: str, day: dt.date, part: int, rows: list[_Row],
                  duplicates: int = 0, consent: bool = False) -> FileStats:
    """Write one part of a source; its first `duplicates` rows are late duplicates. `consent`: the rows
    carry the consent fields (a CSV's header has their columns before its last)."""
    spec, channel = _EXPORTS[source], SOURCES[source]
    if consent and spec.consent_header:
        spec = dataclasses.replace(spec, header=(*spec.header[:-1], *spec.consent_header, spec.header[-1]))
    path = landing / source / day.isoformat() / f"part-{part:05d}.{EXTENSIONS[channel]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    split = 0
    if spec.is_json:
        texts = []
        for rec, kind, (u, v) in rows:
            text = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
            if kind == _TRUNCATED:
                text, added = _truncate_json(text, spec.keep_before, u, v)
                split += added
            texts.append(text + "\n")
        body = "".join(texts)
        lines = records = body.count("\n")
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=spec.delimiter, lineterminator=spec.newline, quoting=spec.quoting)
        if spec.header:
            writer.writerow(spec.header)
        header_lines = buf.getvalue().count("\n")
        for cols, kind, (u, v) in rows:
            writer.writerow(_misalign(cols, spec.id_columns, u, v) if kind == _WRONG_COLUMNS else cols)
        body = buf.getvalue()
        lines, records = body.count("\n") - header_lines, len(rows)
    path.write_bytes((spec.bom + body).encode(spec.encoding))
    kinds = np.array([kind for _, kind, _ in rows], np.int8)
    return FileStats(path=path.relative_to(landing).as_posix(), lines=lines, records=records,
                     corrupt_lines=_corrupt_counts(channel, kinds, split), duplicates=duplicates)


@dataclass(frozen=True)
class _Tail:
    """A source-day's last good records, which the next day's first file of the source repeats."""

    path: str
    rows: list[_Row]


def _tail(path: str, rows: list[_Row], records: int, rate: float) -> _Tail:
    """The last ⌈rate × records⌉ good rows of a source-day (of its last part, `rows`), as an upstream
    re-sends its last minutes; `records` counts the day's own records as FileStats does."""
    count, good = math.ceil(rate * records - 1e-9), []
    for row in reversed(rows):  # from the end: a day's rows are many, its tail is short
        if len(good) == count:
            break
        if row[1] < 0:
            good.append(row)
    return _Tail(path, good[::-1])


def _write_real_batch(landing: Path, channel: str, day: dt.date, batch: _Batch, noise: NoiseRates,
                      rng: np.random.Generator, late: dict[str, _Tail],
                      ) -> tuple[list[FileStats], dict[str, list[FileStats]], dict[str, _Tail]]:
    """Write a channel-day's records as its sources export them, record by record.

    Returns the stats the default format would have written (to pick the same duplicate), each
    source's stats, and each source's tail for the next day; a default part `NNNNN` becomes part
    `NNNNN` of every source of the channel. Part 00000 starts with the `late` rows of the day before.
    """
    header = (*CSV_HEADERS[channel], *batch.extra_columns) if channel in CSV_HEADERS else None
    sources = [s for s, ch in SOURCES.items() if ch == channel]
    draws = rng.random((len(batch), 4))
    default_stats: list[FileStats] = []
    real: dict[str, list[FileStats]] = {s: [] for s in sources}
    limit = MAX_LINES_PER_FILE
    for part in range(max(1, math.ceil(len(batch) / limit))):
        a, b = part * limit, min(len(batch), (part + 1) * limit)
        corrupt, aux = batch.corrupt[a:b], batch.aux[a:b]
        split = int(((corrupt == _TRUNCATED) & (aux[:, 1] < _SPLIT_SHARE)).sum())
        default_stats.append(FileStats(
            path=f"{channel}/{day.isoformat()}/part-{part:05d}.{EXTENSIONS[channel]}",
            lines=b - a + split, records=b - a + split, corrupt_lines=_corrupt_counts(channel, corrupt, split)))
        rows: dict[str, list] = {s: [] for s in sources}
        # Unbroken lines: a bad timestamp or amount is already in the text; breaking happens per format.
        for line, kind, draw, uv in zip(batch.lines(a, b).to_pylist(), corrupt, draws[a:b], aux,
                                        strict=True):
            rec = dict(zip(header, line[:-1].split(","), strict=True)) if header else json.loads(line)
            source = _source_of(channel, rec)
            rows[source].append((_EXPORTS[source].convert(rec, kind, draw, noise), kind, uv))
        for source in sources:
            first = late[source].rows if part == 0 and source in late else []
            real[source].append(_write_export(landing, source, day, part, first + rows[source], len(first),
                                              consent=bool(batch.extra_columns)))
    tails = {s: _tail(real[s][-1].path, rows[s], sum(f.records - f.duplicates for f in real[s]),
                      noise.late_duplicate) for s in sources}
    return default_stats, real, tails


def _reexport_text(spec: _Export, text: str) -> str:
    """A file's records newest first with CRLF line endings (a record's own line breaks kept), the
    header first: the same records in other bytes even where the source writes CRLF already."""
    lines = [line + "\n" for line in text.split("\n")[:-1]]
    if spec.is_json:
        records = lines  # a reader's record is a line, each half of a split record too
    else:
        reader, records, done = csv.reader(lines, delimiter=spec.delimiter), [], 0
        for _ in reader:
            records.append("".join(lines[done:reader.line_num]))
            done = reader.line_num
    head = 1 if spec.header else 0
    ordered = records[:head] + records[head:][::-1]
    return "".join(r.removesuffix(spec.newline) + "\r\n" for r in ordered)


def _write_reexports(landing: Path, channels: dict[str, ChannelStats], start: dt.date, days: int,
                     rate: float, seed: int) -> None:
    """Export ⌈rate × n⌉ of the n files (of two records or more) of the days before the last again, each
    to `part-NNNNN-reexport.<ext>` in a later day's folder of its source (never one name twice)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 300, 0]))

    def day_of(f: FileStats) -> int:
        return (dt.date.fromisoformat(f.path.split("/")[1]) - start).days

    files = [(s, f) for s, stats in channels.items() for f in stats.per_file
             if f.records >= 2 and day_of(f) < days - 1]
    count = math.ceil(rate * len(files) - 1e-9)
    picked = sorted(int(i) for i in rng.choice(len(files), size=count, replace=False)) if count else []
    # Latest originals first: of one (source, part), fewer originals lie after day d than days do,
    # so the original of day d always finds a later day whose name is free.
    targets: dict[int, tuple[str, int, str]] = {}
    for i in sorted(picked, key=lambda i: -day_of(files[i][1])):
        source, f = files[i]
        part = f.path.rsplit("/", 1)[1]
        free = [d for d in range(day_of(f) + 1, days) if (source, d, part) not in targets.values()]
        targets[i] = (source, free[int(rng.integers(len(free)))], part)
    for i in picked:
        source, original = files[i]
        spec, (_, d, name) = _EXPORTS[source], targets[i]
        stem, ext = name.rsplit(".", 1)
        target = landing / source / (start + dt.timedelta(days=d)).isoformat() / f"{stem}-reexport.{ext}"
        text = (landing / original.path).read_bytes().decode(spec.encoding).removeprefix(spec.bom)
        target.write_bytes((spec.bom + _reexport_text(spec, text)).encode(spec.encoding))
        good = original.records - sum(original.corrupt_lines.values())
        copy = original.model_copy(
            update={"path": target.relative_to(landing).as_posix(), "duplicates": good}, deep=True)
        channels[source].per_file.append(copy)
        channels[source].reexported_files.append(ReexportedFile(original=original.path, reexport=copy.path))


# ---------------------------------------------------------------- entry point


def _check_arguments(landing: Path, people: int, days: int, seed: int, start: dt.date,
                     noise: NoiseRates, format: str, population: str) -> None:
    def is_int(x: object) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(people) or people < 1:
        raise GenerateError(f"people must be an integer >= 1, got {people!r}")
    if people > 100_000_000:
        raise GenerateError(f"people must be at most 100,000,000, got {people:,}")
    if not is_int(days) or days < 1:
        raise GenerateError(f"days must be an integer >= 1, got {days!r}")
    if days > 3660:
        raise GenerateError(f"days must be at most 3660 (ten years), got {days}")
    if not is_int(seed) or seed < 0:
        raise GenerateError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(start, dt.datetime) or not isinstance(start, dt.date):
        raise GenerateError(f"start must be a datetime.date (not a datetime), got {start!r}")
    if not isinstance(noise, NoiseRates):
        raise GenerateError(f"noise must be a NoiseRates, got {type(noise).__name__}")
    if format not in FORMATS:
        raise GenerateError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not isinstance(population, str) or population not in POPULATIONS:
        raise GenerateError(f"population must be one of {', '.join(POPULATIONS)}, got {population!r}")
    if landing.exists() and not landing.is_dir():
        raise GenerateError(f"landing must be a directory, but {landing} is a file")


def _with_population(noise: NoiseRates, population: str) -> NoiseRates:
    """`noise` with the identity-pattern rates of `population`, except those `noise` sets itself."""
    rates = {k: v for k, v in POPULATIONS[population].items() if k not in noise.model_fields_set}
    return noise.model_copy(update=rates)


def generate(landing: Path, people: int, days: int, seed: int, start: dt.date,
             noise: NoiseRates = NoiseRates(),
             progress: Callable[[str], None] | None = None,
             format: OutputFormat = "default",
             population: Population = "default",
             consent: ConsentRates | None = None) -> Manifest:
    """Write `days` days of raw dumps of every channel for `people` people, plus ground truth.

    `format="default"` writes landing/<channel>/ as docs/channels.md describes; `format="real"`
    writes the same records as real systems export them, to landing/<source>/ of the sources in
    conf/sources.yaml (`SOURCES`), with redeliveries only a record key tells apart (re-exported
    files, late duplicate records; `NoiseRates.reexport_file`, `late_duplicate`). Either way
    landing/<channel>/, landing/<source>/ and landing/_truth/ are replaced; the same arguments give
    byte-identical files.

    `population` sets the rates of the identity patterns (`POPULATIONS`): `"default"` has none, and
    writes what the generator wrote before they existed; `"retail"` has re-issued phone numbers,
    partners' phones, duplicate memberships, store phones and junk device ids. A pattern rate set in
    `noise` itself wins over the population's. Re-issued numbers need two days or more (the new
    owner registers on a day >= 1, after the first owner's change); with `days=1` there are none.

    `consent` adds marketing consent (ConsentRates): the CRM's consent fields, the mini-program's
    mp_subscribe answers and landing/_truth/consent.csv. None (the default) writes neither, so the
    files are what they were before consent existed.
    """
    landing = Path(landing)
    _check_arguments(landing, people, days, seed, start, noise, format, population)
    if consent is not None and not isinstance(consent, ConsentRates):
        raise GenerateError(f"consent must be a ConsentRates or None, got {type(consent).__name__}")
    noise = _with_population(noise, population)
    report = progress or (lambda message: None)
    for folder in (*CHANNELS, *SOURCES, "_truth"):
        shutil.rmtree(landing / folder, ignore_errors=True)
    landing.mkdir(parents=True, exist_ok=True)

    world = _build_world(people, days, start, seed, noise)
    _cast_patterns(world, noise, seed)
    if consent is not None:
        world.consent = _cast_consent(world, consent, seed)
    seen = _Seen.empty(world)
    by_channel: dict[str, list[FileStats]] = {ch: [] for ch in CHANNELS}
    channels = {name: ChannelStats() for name in (SOURCES if format == "real" else CHANNELS)}
    derived: dict[str, list[tuple[str, FileStats]]] = {}  # real: a channel file -> its sources' files
    tails: dict[str, _Tail] = {}  # real: each source's last good records of the day before
    held: dict[str, pa.Array | None] = {}  # default: each channel's records of the day before that arrive late
    report(f"population of {people:,} built" + (", writing real-world exports" if format == "real" else ""))
    for d in range(days):
        day = start + dt.timedelta(days=d)
        intensity = world.intensity(d, start.weekday())
        written = 0
        for number, channel in enumerate(CHANNELS):
            rng = np.random.default_rng(np.random.SeedSequence([seed, 1 + number, d]))
            batch = _BUILDERS[channel](world, seen, noise, d, day, rng, intensity)
            if format == "real":
                real_rng = np.random.default_rng(np.random.SeedSequence([seed, 200 + number, d]))
                stats, real, new_tails = _write_real_batch(landing, channel, day, batch, noise, real_rng,
                                                           tails)
                for source, files in real.items():
                    late = tails.get(source)
                    if late and late.rows:
                        channels[source].late_duplicates.append(LateDuplicates(
                            original=late.path, file=files[0].path, records=len(late.rows),
                            keys=[_EXPORTS[source].key(row) for row, _, _ in late.rows]))
                    channels[source].per_file.extend(files)
                    written += sum(f.lines for f in files)
                    for original, f in zip(stats, files, strict=True):
                        derived.setdefault(original.path, []).append((source, f))
                tails |= new_tails
            else:
                late = None
                if noise.late_arrival and channel in LATE_ARRIVAL_CHANNELS and d < days - 1:
                    late_rng = np.random.default_rng(np.random.SeedSequence([seed, 300 + number, d]))
                    late = (batch.corrupt == -1) & (late_rng.random(len(batch)) < noise.late_arrival)
                stats, held[channel] = _write_batch(landing, channel, day, batch, late, held.get(channel))
                channels[channel].per_file.extend(stats)
                written += sum(s.lines for s in stats)
            by_channel[channel].extend(stats)
        report(f"{day.isoformat()}: {written:,} lines")
    if format == "real":
        _write_reexports(landing, channels, start, days, noise.reexport_file, seed)
    if noise.duplicate_file:
        channel, original, resend_day = _pick_duplicate(start, days, seed, by_channel)
        name = channel
        if format == "real":  # the same delivery: of a channel split over two sources, the fuller one
            name, original = max(derived[original.path], key=lambda sf: sf[1].records)
        _write_duplicate(landing, channels[name], original, resend_day)
    for stats in channels.values():
        stats.files = len(stats.per_file)
        stats.lines = sum(f.lines for f in stats.per_file)
        stats.records = sum(f.records for f in stats.per_file)
        stats.corrupt_lines = {k: sum(f.corrupt_lines[k] for f in stats.per_file)
                               for k in stats.per_file[0].corrupt_lines}
    identities = _write_truth(landing, world, seen, noise)
    patterns = seen.patterns | {"recycled_phones": int(world.patterns.rec_a.size),
                                "duplicate_memberships": int(world.patterns.dup_person.size)}
    manifest = Manifest(seed=seed, people=people, days=days, start=start,
                        end=start + dt.timedelta(days=days - 1), format=format, noise=noise,
                        total_lines=sum(c.lines for c in channels.values()), channels=channels,
                        identities=identities, population=population, patterns=patterns, consent=consent)
    (landing / "_truth" / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    report(f"done: {manifest.total_lines:,} lines")
    return manifest
