"""Writes the ingest test corpus (landing/<source>/2026-11-01/* and expected.json beside this file) and
cross-checks its hand-written expectations against an independent parse of the written bytes.

    python tests/corpus/sources/make_corpus.py           # (re)write the files, then check
    python tests/corpus/sources/make_corpus.py --check   # check the files on disk, write nothing

Every byte comes from the literals below (no randomness, no clock), so the files are reproducible.
Each Case carries the expectation reasoned by hand (README.md explains each one); `parse_file` is a
separate, small implementation of the rules (csv / json / zoneinfo / decimal from the standard library,
field lists from spark_jobs.contracts, nothing else from spark_jobs). The script fails unless both
agree on every file, record and value.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from spark_jobs.contracts import CHANNEL_FIELDS  # noqa: E402  (the model fields and their types)

LANDING = HERE / "landing"
DAY = "2026-11-01"
DEFAULT_TZ = "Asia/Shanghai"  # standardise.timezone (conf/cdp.yaml)

# One instant, 2026-11-01 09:15:02.123 China time, in the ways sources write it.
T0 = "2026-11-01T01:15:02.123000Z"
T0_MS = 1793495702123
T0_S = 1793495702

IDFV = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"  # an iOS identifierForVendor
ANDROID = "a1b2c3d4e5f60789"  # an Android ID (lower-case hex)
AJS = "507f191e-810c-4f1b-9aa7-1c2d3e4f5a6b"  # an analytics.js anonymousId
DEV = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
FW_PHONE = "１３９１２３４５６７８"  # full-width digits: NFKC -> 13912345678


# --- building bytes -------------------------------------------------------------------------------
def text(lines: list[str], eol: str = "\n", final: bool = True, bom: bool = False, encoding: str = "utf-8") -> bytes:
    s = ("\ufeff" if bom else "") + eol.join(lines) + (eol if final else "")
    return s.encode(encoding)


def j(obj) -> str:
    """One compact JSON line, keys in the order written."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def L(line: int, **fields) -> dict:
    """A loaded record: its start line and its non-null fields (the rest are null)."""
    return {"_line": line, **fields}


def Q(line: int, reason: str) -> dict:
    return {"_line": line, "reason": reason}


@dataclass
class Case:
    path: str  # relative to landing/
    source: str
    data: bytes
    lines: int
    records: int
    loaded: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    file_reason: str | None = None


CASES: list[Case] = []


def case(name: str, source: str, data: bytes, lines: int, records: int, loaded=(), quarantined=(),
         file_reason=None) -> None:
    CASES.append(Case(f"{source}/{DAY}/{name}", source, data, lines, records, list(loaded), list(quarantined),
                      file_reason))


CRM_HEADER = "member_id,name,phone,email,login_id,unionid,gender,birthday,city,tier,registered_at,updated_at"

# --- crm (plain: UTF-8, header = field names, iso / iso_local) --------------------------------------
case("part-00000.csv", "crm", text([
    CRM_HEADER,
    'M000000001,"Liu, Amy",13912345678,amy.liu@example.com,U00000001,oUnion_amy001,F,1990-05-17,Shanghai,gold,'
    '2024-03-08T10:00:00.000+08:00,2026-11-01T09:15:02.123+08:00',
    f'M000000002,"Amy ""Xiao Mei"" Liu",{FW_PHONE},amy＠example.com,,,F,1991-01-02,Beijing,silver,'
    '2025-01-01T00:00:00Z,2026-11-01T01:15:02.123Z',
    'M000000003,ＷＡＮＧ Ｌｅｉ,"139\u30001234\u30005678", Lei.Wang@Example.COM ,U00000003,,M,,"Guangzhou, Tianhe",'
    'normal,,2026-11-01T09:15:02.123',
    "M000000004,Zhao Min,+86 139-1234-0004,,,,X,1988-12-31,Shenzhen,platinum,,2026-11-01T10:00:00+08:00",
    "M000000005,Qian Hao,13912340005,,,,M,1990-02-30,Suzhou,normal,,2026-11-01T10:00:00+08:00",
    ",No Member,13912340006,,,,F,,Hangzhou,normal,,2026-11-01T10:00:00+08:00",
    "M000000007,Sun Li,13912340007,,,,F,,Nanjing,normal,2026-11-01T09:00:00+08:00,",
    'M000000008,"",13912340008,"",,,"",,,"",2026-13-45T25:61:00+08:00,2026-11-01T11:00:00+08:00',
    ",Zhou Yu,13912340009,,,,F,1990-13-01,Xiamen,normal,,yesterday",
    'M000000010,"  Wu  Fang  ",13912340010,,,,F,,Chengdu,normal,,2026-11-01T12:00:00+08:00',
]), lines=10, records=10, loaded=[
    L(2, member_id="M000000001", name="Liu, Amy", phone="13912345678", email="amy.liu@example.com",
      login_id="U00000001", unionid="oUnion_amy001", gender="F", birthday="1990-05-17", city="Shanghai",
      tier="gold", registered_at="2024-03-08T02:00:00.000000Z", updated_at=T0),
    L(3, member_id="M000000002", name='Amy "Xiao Mei" Liu', phone="13912345678", email="amy@example.com",
      gender="F", birthday="1991-01-02", city="Beijing", tier="silver",
      registered_at="2025-01-01T00:00:00.000000Z", updated_at=T0),
    L(4, member_id="M000000003", name="ＷＡＮＧ Ｌｅｉ", phone="139 1234 5678", email="Lei.Wang@Example.COM",
      login_id="U00000003", gender="M", city="Guangzhou, Tianhe", tier="normal", updated_at=T0),
    L(11, member_id="M000000010", name="Wu  Fang", phone="13912340010", gender="F", city="Chengdu",
      tier="normal", updated_at="2026-11-01T04:00:00.000000Z"),
], quarantined=[
    Q(5, "expect_column_values_to_be_in_set: gender"),  # a gender the contract has no value for: a record rule
    Q(6, "bad_date: birthday"), Q(7, "missing_required: member_id"), Q(8, "missing_required: updated_at"),
    Q(9, "bad_timestamp: registered_at"), Q(10, "missing_required: member_id"),
])

case("part-00001.csv", "crm", text([
    "updated_at,member_id,tier,city,birthday,gender,unionid,login_id,email,phone,name,registered_at",
    "2026-11-01T09:15:02.123+08:00,M000000021,silver,Shanghai,1995-07-07,F,oUnion_021,U00000021,lin@example.com,"
    "13912340021,Lin Xue,2026-11-01T09:15:02.123+08:00",
    "2026-11-01T01:15:02.123Z,M000000022,normal,,,M,,,,13912340022,Guo Jing,",
    "2026-11-01T08:00:00,M000000023,gold,Wuhan,2000-02-29,,,U00000023,guo@example.com,,Huang Rong,"
    "2026-11-01T08:00:00",
]), lines=3, records=3, loaded=[
    L(2, member_id="M000000021", name="Lin Xue", phone="13912340021", email="lin@example.com", login_id="U00000021",
      unionid="oUnion_021", gender="F", birthday="1995-07-07", city="Shanghai", tier="silver", registered_at=T0,
      updated_at=T0),
    L(3, member_id="M000000022", name="Guo Jing", phone="13912340022", gender="M", tier="normal", updated_at=T0),
    L(4, member_id="M000000023", name="Huang Rong", email="guo@example.com", login_id="U00000023",
      birthday="2000-02-29", city="Wuhan", tier="gold", registered_at="2026-11-01T00:00:00.000000Z",
      updated_at="2026-11-01T00:00:00.000000Z"),
])

case("part-00002.csv", "crm", text([
    CRM_HEADER + ",store_code",
    "M000000031,He Jia,13912340031,hejia@example.com,,,F,1993-03-03,Shanghai,normal,,2026-11-01T09:15:02.123+08:00,S0001",
    "M000000032,Ma Chao,13912340032,,,,M,,Beijing,silver,,2026-11-01T10:15:02.123+08:00,S0002",
    "M000000033,Extra Field,13912340033,,,,M,,Beijing,silver,,2026-11-01T10:15:02.123+08:00,S0002,oops",
    "M000000034,Short Row,13912340034,,,,M,,Beijing,silver,2026-11-01T10:15:02.123+08:00,S0003",
    'M000000035,"Quoted, Comma",13912340035,,,,F,,"Shanghai",gold,,2026-11-01T11:15:02.123+08:00,"S0004"',
], eol="\r\n", bom=True), lines=5, records=5, loaded=[
    L(2, member_id="M000000031", name="He Jia", phone="13912340031", email="hejia@example.com", gender="F",
      birthday="1993-03-03", city="Shanghai", tier="normal", updated_at=T0, _extra={"store_code": "S0001"}),
    L(3, member_id="M000000032", name="Ma Chao", phone="13912340032", gender="M", city="Beijing", tier="silver",
      updated_at="2026-11-01T02:15:02.123000Z", _extra={"store_code": "S0002"}),
    L(6, member_id="M000000035", name="Quoted, Comma", phone="13912340035", gender="F", city="Shanghai",
      tier="gold", updated_at="2026-11-01T03:15:02.123000Z", _extra={"store_code": "S0004"}),
], quarantined=[
    Q(4, "wrong_column_count: expected 13, got 14"), Q(5, "wrong_column_count: expected 13, got 12"),
])

case("part-00003.csv", "crm", text([
    "member_id,name,phone,updated_at",
    "M000000041,Xu Ming,13912340041,2026-11-01T09:15:02.123+08:00",
    "M000000042,,13912340042,2026-11-01T09:30:00+08:00",
    "M000000043,Yang Guo,,2026-11-01T09:45:00.500+08:00",
]), lines=3, records=3, loaded=[
    L(2, member_id="M000000041", name="Xu Ming", phone="13912340041", updated_at=T0),
    L(3, member_id="M000000042", phone="13912340042", updated_at="2026-11-01T01:30:00.000000Z"),
    L(4, member_id="M000000043", name="Yang Guo", updated_at="2026-11-01T01:45:00.500000Z"),
])

case("part-00004.csv", "crm", b"", lines=0, records=0)

case("part-00005.csv", "crm", text([
    CRM_HEADER,
    "M000000051,Luo Yi,13912340051,luoyi@example.com,,,F,,Shanghai,normal,,2026-11-01T09:15:02.123+08:00",
    "M000000052,Tang Er,13912340052,,,,M,,Beijing,normal,,2026-11-01T09:16:02.123+08:00",
    "M000000053,Song San,13912340053,,,,M,,Tianjin,gold,,2026-11-01T09:17:02.123+08:00",
], final=False), lines=3, records=3, loaded=[
    L(2, member_id="M000000051", name="Luo Yi", phone="13912340051", email="luoyi@example.com", gender="F",
      city="Shanghai", tier="normal", updated_at=T0),
    L(3, member_id="M000000052", name="Tang Er", phone="13912340052", gender="M", city="Beijing", tier="normal",
      updated_at="2026-11-01T01:16:02.123000Z"),
    L(4, member_id="M000000053", name="Song San", phone="13912340053", gender="M", city="Tianjin", tier="gold",
      updated_at="2026-11-01T01:17:02.123000Z"),
])

# Declared UTF-8, but two names and a city were pasted from a GBK system.
case("part-00006.csv", "crm", b"".join([
    (CRM_HEADER + "\n").encode(),
    "M000000061,李娜,13912340061,,,,F,,上海,normal,,2026-11-01T09:15:02.123+08:00\n".encode(),
    b"M000000062," + "张伟".encode("gbk") + ",13912340062,,,,M,,北京,normal,,2026-11-01T09:20:00+08:00\n".encode(),
    "M000000063,王芳,13912340063,,,,F,,广州,normal,,2026-11-01T09:25:00+08:00\n".encode(),
    b"M000000064,Chen Jie,13912340064,,,,M,," + "上海".encode("gbk") + b",normal,,2026-11-01T09:30:00+08:00\n",
    b"M000000065," + "刘洋".encode("gbk") + ",13912340065,,,,M,1990-02-30,深圳,normal,,2026-11-01T09:35:00+08:00\n".encode(),
]), lines=5, records=5, loaded=[
    L(2, member_id="M000000061", name="李娜", phone="13912340061", gender="F", city="上海", tier="normal",
      updated_at=T0),
    L(4, member_id="M000000063", name="王芳", phone="13912340063", gender="F", city="广州", tier="normal",
      updated_at="2026-11-01T01:25:00.000000Z"),
], quarantined=[Q(3, "bad_encoding"), Q(5, "bad_encoding"), Q(6, "bad_encoding")])

case("part-00007.csv", "crm", text([
    "member_id,name,phone,phone,email,login_id,unionid,gender,birthday,city,tier,registered_at,updated_at",
    "M000000071,Hu Bin,13912340071,021-55550071,,,,M,,Shanghai,normal,,2026-11-01T09:15:02.123+08:00",
    "M000000072,Hu Lan,13912340072,,,,,F,,Shanghai,normal,,2026-11-01T09:15:02.123+08:00",
]), lines=2, records=2, file_reason="bad_header", quarantined=[Q(2, "bad_header"), Q(3, "bad_header")])

case("part-00008.csv", "crm", text([
    "member_id,name,phone,email,login_id,unionid,gender,birthday,city,tier,registered_at,last_modified",
    "M000000081,Gao Feng,13912340081,,,,M,,Shanghai,normal,,2026-11-01T09:15:02.123+08:00",
    "M000000082,Gao Yu,13912340082,,,,F,,Shanghai,normal,,2026-11-01T09:15:02.123+08:00",
]), lines=2, records=2, file_reason="bad_header", quarantined=[Q(2, "bad_header"), Q(3, "bad_header")])

# --- crm_excel (GB18030, CRLF, Chinese headers, values maps, patterns) -------------------------------
CRM_EXCEL_HEADER = "会员编号,姓名,手机号,邮箱,APP账号,微信UnionID,性别,生日,城市,会员等级,注册时间,更新时间"
case("part-00000.csv", "crm_excel", text([
    CRM_EXCEL_HEADER,
    "M100000001,张伟,13912345678,zhangwei@example.com,U10000001,oUnion_zw001,男,1985/03/12,上海,金卡,"
    "2023-05-01 10:20:30.000,2026-11-01 09:15:02.123",
    "M100000002,陈𠮷,１３９００００２２２２,chen＠example.com,,,女,1992/11/30,北京,白金,2024-12-31 23:59:59.999,"
    "2026-11-01 10:00:00.000",
    'M100000003,"王小明, Jr.",13900003333,,,,,,广州,普通,,2026-11-01 11:00:00.000',
    "M100000004,李娜,13900004444,,,,未知,1990/01/01,深圳,银卡,,2026-11-01 11:30:00.000",
    "M100000005,赵六,13900005555,,,,男,1990/02/30,杭州,普通,,2026-11-01 12:00:00.000",
    "M100000006,孙七,13900006666,,,,女,1991/04/04,南京,钻石,,2026-11-01 12:30:00.000",
    "M100000007,周八,13900007777,,,,未知,1990/02/30,苏州,普通,,2026-11-01 13:00:00.000",
    "M100000008,吴九,13900008888,,,,男,1988/08/08,成都,普通,,2026-11-01T09:15:02.123+08:00",
    "M100000009,郑十,13900009999,,,,女,1988-08-08,重庆,普通,,2026-11-01 14:00:00.000",
], eol="\r\n", encoding="gb18030"), lines=9, records=9, loaded=[
    L(2, member_id="M100000001", name="张伟", phone="13912345678", email="zhangwei@example.com",
      login_id="U10000001", unionid="oUnion_zw001", gender="M", birthday="1985-03-12", city="上海", tier="gold",
      registered_at="2023-05-01T02:20:30.000000Z", updated_at=T0),
    L(3, member_id="M100000002", name="陈𠮷", phone="13900002222", email="chen@example.com", gender="F",
      birthday="1992-11-30", city="北京", tier="platinum", registered_at="2024-12-31T15:59:59.999000Z",
      updated_at="2026-11-01T02:00:00.000000Z"),
    L(4, member_id="M100000003", name="王小明, Jr.", phone="13900003333", city="广州", tier="normal",
      updated_at="2026-11-01T03:00:00.000000Z"),
], quarantined=[
    Q(5, "bad_value: gender"), Q(6, "bad_date: birthday"), Q(7, "bad_value: tier"), Q(8, "bad_value: gender"),
    Q(9, "bad_timestamp: updated_at"), Q(10, "bad_date: birthday"),
])

# Declared gb18030 but written as UTF-8 (strict GB18030 decoding fails at 手机号; a lenient one would
# return mojibake): rejected whole.
case("part-00001.csv", "crm_excel", text([
    CRM_EXCEL_HEADER,
    "M100000011,张伟,13912345678,,,,男,1985/03/12,上海,金卡,,2026-11-01 09:15:02.123",
    "M100000012,王芳,13912340012,,,,女,,北京,普通,,2026-11-01 09:20:00.000",
    "M100000013,刘洋,13912340013,,,,男,,广州,银卡,,2026-11-01 09:25:00.000",
], eol="\r\n"), lines=3, records=3, file_reason="bad_encoding",
    quarantined=[Q(2, "bad_encoding"), Q(3, "bad_encoding"), Q(4, "bad_encoding")])

# --- crm_legacy (GBK, English headers) --------------------------------------------------------------
case("part-00000.csv", "crm_legacy", text([
    CRM_HEADER,
    "M200000001,张伟,13912345678,,,,男,1985-03-12,上海,gold,2020-01-01T08:00:00+08:00,2026-11-01T09:15:02.123+08:00",
    "M200000002,王芳,13912340002,,,,女,,北京,normal,,2026-11-01T01:20:00Z",
    "M200000003,刘洋,13912340003,,,,M,,广州,silver,,2026-11-01T09:25:00+08:00",
    "M200000004,陈静,13912340004,,,,,,深圳,normal,,2026-11-01 09:30:00",
], eol="\r\n", encoding="gbk"), lines=4, records=4, loaded=[
    L(2, member_id="M200000001", name="张伟", phone="13912345678", gender="M", birthday="1985-03-12", city="上海",
      tier="gold", registered_at="2020-01-01T00:00:00.000000Z", updated_at=T0),
    L(3, member_id="M200000002", name="王芳", phone="13912340002", gender="F", city="北京", tier="normal",
      updated_at="2026-11-01T01:20:00.000000Z"),
], quarantined=[Q(4, "bad_value: gender"), Q(5, "bad_timestamp: updated_at")])

# Declared gbk, written as UTF-8 with only two-character Chinese values: it DOES decode as GBK, to
# mojibake (张伟 -> 寮犱紵); only noticing that the bytes are valid UTF-8 catches it.
case("part-00001.csv", "crm_legacy", text([
    CRM_HEADER,
    "M200000011,张伟,13912345678,,,,,1985-03-12,上海,gold,,2026-11-01T09:15:02.123+08:00",
    "M200000012,王芳,13912340012,,,,,,北京,normal,,2026-11-01T09:20:00+08:00",
    "M200000013,刘洋,13912340013,,,,,,广州,silver,,2026-11-01T09:25:00+08:00",
], eol="\r\n"), lines=3, records=3, file_reason="bad_encoding",
    quarantined=[Q(2, "bad_encoding"), Q(3, "bad_encoding"), Q(4, "bad_encoding")])

# --- orders (plain: no number options, iso / iso_local) ---------------------------------------------
ORDERS_HEADER = "order_id,member_id,phone,items,amount,paid_time,category"
case("part-00000.csv", "orders", text([
    ORDERS_HEADER,
    "O2026110100000001,M000000001,13912345678,SKU1001:1|SKU2002:2,1299,2026-11-01T09:15:02.123+08:00,apparel",
    "O2026110100000002,,13912345678,SKU1001:1,12.3,2026-11-01T01:15:02.123Z,",
    "O2026110100000003,M000000003,, SKU3003:1 , 88.00 ,2026-11-01T09:15:02.123,shoes",
    'O2026110100000004,M000000004,,SKU1001:1,"1,299.00",2026-11-01T10:00:00+08:00,apparel',
    "O2026110100000005,M000000005,,SKU1001:1,12.345,2026-11-01T10:00:00+08:00,apparel",
    "O2026110100000006,M000000006,,SKU1001:1,¥12.34,2026-11-01T10:00:00+08:00,apparel",
    "O2026110100000007,M000000007,,SKU1001:1,abc,2026-11-01T10:00:00+08:00,apparel",
    "O2026110100000008,M000000008,,SKU1001:1,12.34.5,2026-11-01T10:00:00+08:00,apparel",
    "O2026110100000009,M000000009,,SKU1001:1,,2026-11-01T10:00:00+08:00,apparel",
    "O2026110100000010,M000000010,,SKU1001:1,abc,yesterday,apparel",
    "O2026110100000011,,,SKU1001:1,0.5,2026-11-01T10:00:00,apparel",
    "O2026110100000012,M000000012,,SKU1001:1,9999999999.99,2026-11-01T10:00:00+08:00,apparel",
    "O2026110100000013,M000000013,,SKU1001:1,10000000000.00,2026-11-01T10:00:00+08:00,apparel",
]), lines=13, records=13, loaded=[
    L(2, order_id="O2026110100000001", member_id="M000000001", phone="13912345678", items="SKU1001:1|SKU2002:2",
      amount="1299.00", paid_time=T0, category="apparel"),
    L(3, order_id="O2026110100000002", phone="13912345678", items="SKU1001:1", amount="12.30", paid_time=T0),
    L(4, order_id="O2026110100000003", member_id="M000000003", items="SKU3003:1", amount="88.00", paid_time=T0,
      category="shoes"),
    L(12, order_id="O2026110100000011", items="SKU1001:1", amount="0.50", paid_time="2026-11-01T02:00:00.000000Z",
      category="apparel"),
    L(13, order_id="O2026110100000012", member_id="M000000012", items="SKU1001:1", amount="9999999999.99",
      paid_time="2026-11-01T02:00:00.000000Z", category="apparel"),
], quarantined=[
    Q(5, "bad_number: amount"), Q(6, "bad_number: amount"), Q(7, "bad_number: amount"),
    Q(8, "bad_number: amount"), Q(9, "bad_number: amount"), Q(10, "missing_required: amount"),
    Q(11, "bad_number: amount"), Q(14, "bad_number: amount"),
])

case("part-00001.csv", "orders", text([ORDERS_HEADER]), lines=0, records=0)

case("part-00002.csv", "orders", text([
    ORDERS_HEADER,
    "O2026110100000021,M000000021,,SKU1001:1,59.90,2026-11-01T09:15:02.123+08:00,apparel",
    "",
    "O2026110100000022,M000000022,,SKU1001:1,59.90,2026-11-01T09:20:02.123+08:00,apparel",
    "   ",
    ",,,,,,",
    ",,,,,,",
]), lines=6, records=6, loaded=[
    L(2, order_id="O2026110100000021", member_id="M000000021", items="SKU1001:1", amount="59.90", paid_time=T0,
      category="apparel"),
    L(4, order_id="O2026110100000022", member_id="M000000022", items="SKU1001:1", amount="59.90",
      paid_time="2026-11-01T01:20:02.123000Z", category="apparel"),
], quarantined=[
    Q(3, "empty_line"), Q(5, "empty_line"), Q(6, "missing_required: order_id"), Q(7, "missing_required: order_id"),
])

# --- shop_orders (UTF-8 BOM, every field quoted, CRLF, thousands ",", iso only) ----------------------
SHOP_HEADER = '"order_id","member_id","phone","items","order_amount","pay_time","category"'


def quoted(*values: str) -> str:
    return ",".join('"' + v.replace('"', '""') + '"' for v in values)


case("part-00000.csv", "shop_orders", text([
    SHOP_HEADER,
    quoted("O2026110100000101", "M000000001", "13912345678", "SKU1001:1|SKU2002:2", "1,299.00",
           "2026-11-01T01:15:02.123Z", "apparel"),
    quoted("O2026110100000102", "", FW_PHONE, "SKU3003:1", "1,234,567.80", "2026-11-01T09:15:02.123+08:00", "shoes"),
    quoted("O2026110100000103", "M000000003", "", "SKU1001:3", "1299", "2026-11-01T01:15:02Z", ""),
    quoted("O2026110100000104", "M000000004", "", "SKU1001:1", "1,2,3", "2026-11-01T01:15:02.123Z", "apparel"),
    quoted("O2026110100000105", "M000000005", "", "SKU1001:1", "12.345", "2026-11-01T01:15:02.123Z", "apparel"),
    quoted("O2026110100000106", "M000000006", "", "SKU1001:1", "¥12.34", "2026-11-01T01:15:02.123Z", "apparel"),
    quoted("O2026110100000107", "M000000007", "", "SKU1001:1", "12,99.00", "2026-11-01T01:15:02.123Z", "apparel"),
    quoted("O2026110100000108", "M000000008", "", "SKU1001:1", "99.00", "2026-11-01 09:15:02", "apparel"),
    quoted("O2026110100000109", "M000000009", "", "SKU1001:1", "99.00", str(T0_MS), "apparel"),
    quoted("O2026110100000110", "M000000010", "", "SKU1001:1", "12,345", "2026-11-01T01:15:02.123Z", "apparel"),
], eol="\r\n", bom=True), lines=10, records=10, loaded=[
    L(2, order_id="O2026110100000101", member_id="M000000001", phone="13912345678", items="SKU1001:1|SKU2002:2",
      amount="1299.00", paid_time=T0, category="apparel"),
    L(3, order_id="O2026110100000102", phone="13912345678", items="SKU3003:1", amount="1234567.80", paid_time=T0,
      category="shoes"),
    L(4, order_id="O2026110100000103", member_id="M000000003", items="SKU1001:3", amount="1299.00",
      paid_time="2026-11-01T01:15:02.000000Z"),
    L(11, order_id="O2026110100000110", member_id="M000000010", items="SKU1001:1", amount="12345.00",
      paid_time=T0, category="apparel"),
], quarantined=[
    Q(5, "bad_number: amount"), Q(6, "bad_number: amount"), Q(7, "bad_number: amount"),
    Q(8, "bad_number: amount"), Q(9, "bad_timestamp: paid_time"), Q(10, "bad_timestamp: paid_time"),
])

# A buyer's note column (not in the mapping): commas, doubled quotes and newlines (LF inside the
# quotes, as Excel writes a cell's line breaks; records end with CRLF).
REMARK_2 = "Leave at the door,\ncall 139 1234 5678 first"
REMARK_3 = 'Gift wrap: "Happy Birthday"\nCard: "To Amy, love Bo"\nThanks'
case("part-00001.csv", "shop_orders", text([
    SHOP_HEADER[:-1] + '","remark"',
    quoted("O2026110100000201", "M000000011", "", "SKU1001:1", "59.90", "2026-11-01T02:00:00.000Z", "apparel",
           "请尽快发货"),
    quoted("O2026110100000202", "M000000012", "", "SKU2002:1", "129.00", "2026-11-01T02:05:00.000Z", "shoes",
           REMARK_2),
    quoted("O2026110100000203", "M000000013", "", "SKU3003:2", "1,058.00", "2026-11-01T02:10:00.000Z", "bags",
           REMARK_3),
    quoted("O2026110100000204", "M000000014", "", "SKU1001:1", "59.90", "2026-11-01T02:15:00.000Z", "apparel", "ok"),
], eol="\r\n", bom=True), lines=7, records=4, loaded=[
    L(2, order_id="O2026110100000201", member_id="M000000011", items="SKU1001:1", amount="59.90",
      paid_time="2026-11-01T02:00:00.000000Z", category="apparel", _extra={"remark": "请尽快发货"}),
    L(3, order_id="O2026110100000202", member_id="M000000012", items="SKU2002:1", amount="129.00",
      paid_time="2026-11-01T02:05:00.000000Z", category="shoes",
      _extra={"remark": "Leave at the door,\ncall 139 1234 5678 first"}),
    L(5, order_id="O2026110100000203", member_id="M000000013", items="SKU3003:2", amount="1058.00",
      paid_time="2026-11-01T02:10:00.000000Z", category="bags",
      _extra={"remark": 'Gift wrap: "Happy Birthday"\nCard: "To Amy, love Bo"\nThanks'}),
    L(8, order_id="O2026110100000204", member_id="M000000014", items="SKU1001:1", amount="59.90",
      paid_time="2026-11-01T02:15:00.000000Z", category="apparel", _extra={"remark": "ok"}),
])

# A transfer cut short: the last record's quote never closes, and there is no final newline.
case("part-00002.csv", "shop_orders", text([
    SHOP_HEADER,
    quoted("O2026110100000301", "M000000031", "", "SKU1001:1", "59.90", "2026-11-01T01:15:02.123Z", "apparel"),
    quoted("O2026110100000302", "M000000032", "", "SKU2002:1", "129.00", "2026-11-01T01:20:02.123Z", "shoes"),
    '"O2026110100000303","M000000033","1391234',
], eol="\r\n", bom=True, final=False), lines=3, records=3, loaded=[
    L(2, order_id="O2026110100000301", member_id="M000000031", items="SKU1001:1", amount="59.90", paid_time=T0,
      category="apparel"),
    L(3, order_id="O2026110100000302", member_id="M000000032", items="SKU2002:1", amount="129.00",
      paid_time="2026-11-01T01:20:02.123000Z", category="shoes"),
], quarantined=[Q(4, "malformed_csv")])

# --- tmall_orders (own source: Chinese headers, ¥/￥, yyyy/MM/dd HH:mm, an expr) ----------------------
case("part-00000.csv", "tmall_orders", text([
    "订单编号,买家会员名,收货人手机,商家编码,购买数量,实付金额,付款时间,类目",
    '3012345678901234,tb_amy,13912345678,SKU1001,2,"¥1,299.00",2026/11/01 09:15,服装',
    f"3012345678901235,小明同学,{FW_PHONE},SKU2002,1,￥88.50,2026/11/01 23:59,鞋靴",
    '3012345678901236,tb_bo,13912340003,SKU3003,1,"￥12,345.00",2026/11/01 00:05,箱包',
    "3012345678901237,tb_cc,13912340004,SKU1001,1,¥12.34.5,2026/11/01 10:00,服装",
    '3012345678901238,tb_dd,13912340005,SKU1001,1,"¥1,2,3",2026/11/01 10:00,服装',
    "3012345678901239,tb_ee,13912340006,SKU1001,1,¥59.00,2026-11-01 10:00,服装",
    "3012345678901240,tb_ff,13912340007,SKU1001,1,¥59.00,2026/11/01 10:00:02,服装",
    "3012345678901241,tb_gg,13912340008,SKU1001,1,12.5元,2026/11/01 10:00,服装",
    "3012345678901242,tb_hh,,SKU1001,1,59,2026/11/01 10:30,服装",
], eol="\r\n", bom=True), lines=9, records=9, loaded=[
    L(2, order_id="3012345678901234", phone="13912345678", items="SKU1001:2", amount="1299.00",
      paid_time="2026-11-01T01:15:00.000000Z", category="服装", _extra={"买家会员名": "tb_amy"}),
    L(3, order_id="3012345678901235", phone="13912345678", items="SKU2002:1", amount="88.50",
      paid_time="2026-11-01T15:59:00.000000Z", category="鞋靴", _extra={"买家会员名": "小明同学"}),
    L(4, order_id="3012345678901236", phone="13912340003", items="SKU3003:1", amount="12345.00",
      paid_time="2026-10-31T16:05:00.000000Z", category="箱包", _extra={"买家会员名": "tb_bo"}),
    L(10, order_id="3012345678901242", items="SKU1001:1", amount="59.00", paid_time="2026-11-01T02:30:00.000000Z",
      category="服装", _extra={"买家会员名": "tb_hh"}),
], quarantined=[
    Q(5, "bad_number: amount"), Q(6, "bad_number: amount"), Q(7, "bad_timestamp: paid_time"),
    Q(8, "bad_timestamp: paid_time"), Q(9, "bad_number: amount"),
])

# --- pos_export (UTF-16LE with BOM, tab-separated, CRLF, ¥ only, epoch ms) ---------------------------
case("part-00000.csv", "pos_export", text([
    "txn_id\tstore_id\tmember_phone\tamount\ttxn_time",
    f"T2026110100000001\tS0001\t13912345678\t¥1,299.00\t{T0_MS}",
    "T2026110100000002\tS0001\t\t45.00\t1793495762123",
    f"T2026110100000003\tS0002\t{FW_PHONE}\t¥88\t1793498400000",
    "T2026110100000004\tS0002\t\t￥12.00\t1793498400000",
    "T2026110100000005\tS0003\t\t1,2,3\t1793498400000",
    "T2026110100000006\tS0003\t\t12.00\t2026-11-01T09:15:02.123+08:00",
    "T2026110100000007\t\t13912340007\t12.00\t1793498400000",
], eol="\r\n", bom=True, encoding="utf-16-le"), lines=7, records=7, loaded=[
    L(2, txn_id="T2026110100000001", store_id="S0001", member_phone="13912345678", amount="1299.00", txn_time=T0),
    L(3, txn_id="T2026110100000002", store_id="S0001", amount="45.00", txn_time="2026-11-01T01:16:02.123000Z"),
    L(4, txn_id="T2026110100000003", store_id="S0002", member_phone="13912345678", amount="88.00",
      txn_time="2026-11-01T02:00:00.000000Z"),
], quarantined=[
    Q(5, "bad_number: amount"), Q(6, "bad_number: amount"), Q(7, "bad_timestamp: txn_time"),
    Q(8, "missing_required: store_id"),
])

# No member_phone column; an extra store-name column whose 上 (U+4E0A) is the bytes 0A 4E in UTF-16LE:
# a stray 0x0A byte that is not a line break.
case("part-00001.csv", "pos_export", text([
    "txn_id\tstore_id\tamount\ttxn_time\t门店",
    f"T2026110100000011\tS0005\t¥59.90\t{T0_MS}\t上海南京路店",
    f"T2026110100000012\tS0005\t¥1,059.90\t{T0_MS}\t上海南京路店",
], eol="\r\n", bom=True, encoding="utf-16-le"), lines=2, records=2, loaded=[
    L(2, txn_id="T2026110100000011", store_id="S0005", amount="59.90", txn_time=T0, _extra={"门店": "上海南京路店"}),
    L(3, txn_id="T2026110100000012", store_id="S0005", amount="1059.90", txn_time=T0,
      _extra={"门店": "上海南京路店"}),
])

# --- pos_ny (own source: naive US Eastern times; 2026-11-01 02:00 is the end of DST) ---------------
case("part-00000.csv", "pos_ny", text([
    "txn_id,store_id,member_phone,amount,txn_time",
    "T2026110100000901,S9001,+1 212 555 0101,25.00,2026-11-01 09:15:02",
    "T2026110100000902,S9001,,18.50,2026-11-01 00:30:00",
    "T2026110100000903,S9001,,9.99,2026-10-31 23:59:59",
    "T2026110100000904,S9001,,9.99,2026-11-01 21:00:00",
    "T2026110100000905,S9001,,9.99,2026-11-01T09:15:02-05:00",
]), lines=5, records=5, loaded=[
    L(2, txn_id="T2026110100000901", store_id="S9001", member_phone="+1 212 555 0101", amount="25.00",
      txn_time="2026-11-01T14:15:02.000000Z"),
    L(3, txn_id="T2026110100000902", store_id="S9001", amount="18.50", txn_time="2026-11-01T04:30:00.000000Z"),
    L(4, txn_id="T2026110100000903", store_id="S9001", amount="9.99", txn_time="2026-11-01T03:59:59.000000Z"),
    L(5, txn_id="T2026110100000904", store_id="S9001", amount="9.99", txn_time="2026-11-02T02:00:00.000000Z"),
], quarantined=[Q(6, "bad_timestamp: txn_time")])

# --- leads_export (no header, ";", epoch ms) ---------------------------------------------------------
case("part-00000.csv", "leads_export", text([
    f"L2026110100000001;{T0_MS};13912345678;double11_presale;douyin;S0001",
    f'L2026110100000002;{T0_MS};139 1234 5678;"Double 11; early bird";xiaohongshu;',
    f"L2026110100000003;1793495762123;{FW_PHONE};spring, summer;baidu;S0002",
    f"L2026110100000004;{T0_MS};13912340004;double11_presale;douyin",
    "L2026110100000005;2026-11-01T09:15:02+08:00;13912340005;x;douyin;S0003",
    f";{T0_MS};13912340006;x;douyin;",
    f'L2026110100000007;{T0_MS};;"He said ""hi""";douyin;S0004',
]), lines=7, records=7, loaded=[
    L(1, lead_id="L2026110100000001", phone="13912345678", campaign="double11_presale", ad_platform="douyin",
      booking_store="S0001", created_at=T0),
    L(2, lead_id="L2026110100000002", phone="139 1234 5678", campaign="Double 11; early bird",
      ad_platform="xiaohongshu", created_at=T0),
    L(3, lead_id="L2026110100000003", phone="13912345678", campaign="spring, summer", ad_platform="baidu",
      booking_store="S0002", created_at="2026-11-01T01:16:02.123000Z"),
    L(7, lead_id="L2026110100000007", campaign='He said "hi"', ad_platform="douyin", booking_store="S0004",
      created_at=T0),
], quarantined=[
    Q(4, "wrong_column_count: expected 6, got 5"), Q(5, "bad_timestamp: created_at"),
    Q(6, "missing_required: lead_id"),
])

# --- leads_utc (own source: timezone UTC; iso, iso_local, epoch_s) -----------------------------------
case("part-00000.csv", "leads_utc", text([
    "lead_id,phone,campaign,ad_platform,booking_store,created_at",
    "L2026110100000101,13912345678,black_friday,google,,2026-11-01T01:15:02.123",
    "L2026110100000102,13912345678,black_friday,google,,2026-11-01T09:15:02.123+08:00",
    f"L2026110100000103,13912345678,black_friday,google,,{T0_S}",
    "L2026110100000104,13912345678,black_friday,google,,2026-11-01T01:15:02.123Z",
    "L2026110100000105,13912345678,black_friday,meta,S0001,2026-11-01T23:30:00",
    "L2026110100000106,13912345678,black_friday,meta,,01/11/2026 09:15",
]), lines=6, records=6, loaded=[
    L(2, lead_id="L2026110100000101", phone="13912345678", campaign="black_friday", ad_platform="google",
      created_at=T0),
    L(3, lead_id="L2026110100000102", phone="13912345678", campaign="black_friday", ad_platform="google",
      created_at=T0),
    L(4, lead_id="L2026110100000103", phone="13912345678", campaign="black_friday", ad_platform="google",
      created_at="2026-11-01T01:15:02.000000Z"),
    L(5, lead_id="L2026110100000104", phone="13912345678", campaign="black_friday", ad_platform="google",
      created_at=T0),
    L(6, lead_id="L2026110100000105", phone="13912345678", campaign="black_friday", ad_platform="meta",
      booking_store="S0001", created_at="2026-11-01T23:30:00.000000Z"),
], quarantined=[Q(7, "bad_timestamp: created_at")])


# --- app_events (plain JSON lines, iso / iso_local) --------------------------------------------------
def app(n: int, event_time, **over) -> str:
    rec = {"event_id": f"0b7e3c1a-0000-4000-8000-0000000000{n:02d}", "device_id": DEV, "login_id": "U00000001",
           "phone": None, "unionid": None, "platform": "ios", "event_name": "page_view", "event_time": event_time,
           "props": {"page": "home"}}
    rec.update(over)
    return j(rec)


def app_loaded(line: int, n: int, event_time: str, **over) -> dict:
    return L(line, **{"event_id": f"0b7e3c1a-0000-4000-8000-0000000000{n:02d}", "device_id": DEV,
                      "login_id": "U00000001", "platform": "ios", "event_name": "page_view",
                      "event_time": event_time, "props": {"page": "home"}, **over})


case("part-00000.jsonl", "app_events", text([
    app(1, "2026-11-01T09:15:02.123+08:00"),
    app(2, "2026-11-01T01:15:02.123Z"),
    app(3, "2026-11-01T09:15:02.123"),
    app(4, "2026-11-01T04:15:02.123+03:00"),
    app(5, "2026-11-01T09:15:02.123456+08:00"),
    app(6, "2026-11-01T09:15:02+08:00"),
    app(7, "2026-10-31T20:15:02.123-05:00"),
    app(8, "2026-13-45T25:61:00+08:00"),
    app(9, T0_MS),
    app(10, "yesterday"),
    app(11, "0000-00-00T00:00:00+08:00"),
]), lines=11, records=11, loaded=[
    app_loaded(1, 1, T0), app_loaded(2, 2, T0), app_loaded(3, 3, T0), app_loaded(4, 4, T0),
    app_loaded(5, 5, "2026-11-01T01:15:02.123456Z"), app_loaded(6, 6, "2026-11-01T01:15:02.000000Z"),
    app_loaded(7, 7, T0),
], quarantined=[
    Q(8, "bad_timestamp: event_time"), Q(9, "bad_timestamp: event_time"), Q(10, "bad_timestamp: event_time"),
    Q(11, "bad_timestamp: event_time"),
])

E = "1a2b3c4d-0000-4000-8000-0000000000"  # event id prefix of the next file
case("part-00001.jsonl", "app_events", text([
    j({"event_id": E + "01", "device_id": DEV, "login_id": "U00000001", "phone": "13912345678", "unionid": None,
       "platform": "ios", "event_name": "login", "event_time": "2026-11-01T09:15:02.123+08:00",
       "props": {"page": "login"}, "app_version": "5.2.0", "sdk": {"name": "cdp-sdk", "version": 3}}),
    j({"props": {"sku": "SKU1001", "qty": 2, "price": 129.9}, "event_time": "2026-11-01T09:16:02.123+08:00",
       "event_name": "add_cart", "platform": "android", "device_id": ANDROID, "event_id": E + "02"}),
    j({"event_id": E + "03", "device_id": DEV, "login_id": None, "phone": None, "unionid": None, "platform": None,
       "event_name": "app_start", "event_time": "2026-11-01T09:17:02.123+08:00", "props": None}),
    "",
    '{"event_id":"' + E + '05","device_id":"' + DEV + '","login_id":"U00000001","pho',
    j([{"event_id": E + "06", "event_name": "app_start", "event_time": "2026-11-01T09:18:02.123+08:00"}]),
    j({"event_id": E + "07", "device_id": DEV, "login_id": 10000007, "platform": "web", "event_name": "page_view",
       "event_time": "2026-11-01T09:19:02.123+08:00", "props": {"page": "home"}}),
    j({"event_id": f" {E}08 ", "device_id": f" {ANDROID} ", "event_name": " page_view ",
       "event_time": " 2026-11-01T09:20:02.123+08:00 ", "props": {"page": " home "}}),
    j({"event_id": None, "device_id": DEV, "event_name": "page_view", "event_time": "2026-11-01T09:21:02.123+08:00"}),
    j({"event_id": "", "device_id": DEV, "event_name": "page_view", "event_time": "2026-11-01T09:22:02.123+08:00"}),
    j({"event_id": E + "11", "device_id": DEV, "props": {}}),
    "   ",
    "null",
    j({"event_id": E + "14", "device_id": DEV, "login_id": "Ｕ00000014", "phone": FW_PHONE, "unionid": "oUnion_014",
       "platform": "android", "event_name": "register", "event_time": "2026-11-01T09:23:02.123+08:00",
       "props": {"page": "register"}}),
    j({"event_id": E + "15", "event_name": "app_start", "event_time": "2026-11-01T09:24:02.123+08:00"})
    + j({"event_id": E + "16", "event_name": "app_start", "event_time": "2026-11-01T09:24:03.123+08:00"}),
    '{"event_id":"' + E + '16","device_id":"' + DEV + '","event_name":"search",'
    '"event_time":"2026-11-01T09:25:02.123+08:00","props":{"keyword":"\\u8fde\\u8863\\u88d9 \\"\\u65b0\\u6b3e\\""}}',
    j({"event_id": E + "17", "device_id": DEV, "event_name": "share", "event_time": "2026-11-01T09:26:02.123+08:00",
       "props": {"sku": "SKU1001"}, "tags": ["a", "b"]}),
]), lines=17, records=17, loaded=[
    L(1, event_id=E + "01", device_id=DEV, login_id="U00000001", phone="13912345678", platform="ios",
      event_name="login", event_time=T0, props={"page": "login"},
      _extra={"app_version": "5.2.0", "sdk": {"name": "cdp-sdk", "version": 3}}),
    L(2, event_id=E + "02", device_id=ANDROID, platform="android", event_name="add_cart",
      event_time="2026-11-01T01:16:02.123000Z", props={"sku": "SKU1001", "qty": 2, "price": 129.9}),
    L(3, event_id=E + "03", device_id=DEV, event_name="app_start", event_time="2026-11-01T01:17:02.123000Z"),
    L(7, event_id=E + "07", device_id=DEV, login_id="10000007", platform="web", event_name="page_view",
      event_time="2026-11-01T01:19:02.123000Z", props={"page": "home"}),
    L(8, event_id=E + "08", device_id=ANDROID, event_name="page_view", event_time="2026-11-01T01:20:02.123000Z",
      props={"page": " home "}),
    L(14, event_id=E + "14", device_id=DEV, login_id="U00000014", phone="13912345678", unionid="oUnion_014",
      platform="android", event_name="register", event_time="2026-11-01T01:23:02.123000Z",
      props={"page": "register"}),
    L(16, event_id=E + "16", device_id=DEV, event_name="search", event_time="2026-11-01T01:25:02.123000Z",
      props={"keyword": '连衣裙 "新款"'}),
    L(17, event_id=E + "17", device_id=DEV, event_name="share", event_time="2026-11-01T01:26:02.123000Z",
      props={"sku": "SKU1001"}, _extra={"tags": ["a", "b"]}),
], quarantined=[
    Q(4, "empty_line"), Q(5, "malformed_json"), Q(6, "malformed_json"), Q(9, "missing_required: event_id"),
    Q(10, "missing_required: event_id"), Q(11, "missing_required: event_name"), Q(12, "empty_line"),
    Q(13, "malformed_json"), Q(15, "malformed_json"),
])

# Written on Windows: a UTF-8 BOM, CRLF, no final newline.
case("part-00002.jsonl", "app_events", text([
    app(21, "2026-11-01T09:15:02.123+08:00"),
    app(22, "2026-11-01T09:16:02.123+08:00", event_name="search", props={"keyword": "羽绒服"}),
    app(23, "2026-11-01T09:17:02.123+08:00", event_name="view_item", props={"sku": "SKU1001", "category": "apparel"}),
], eol="\r\n", bom=True, final=False), lines=3, records=3, loaded=[
    app_loaded(1, 21, T0),
    app_loaded(2, 22, "2026-11-01T01:16:02.123000Z", event_name="search", props={"keyword": "羽绒服"}),
    app_loaded(3, 23, "2026-11-01T01:17:02.123000Z", event_name="view_item",
               props={"sku": "SKU1001", "category": "apparel"}),
])

case("part-00003.jsonl", "app_events", b"", lines=0, records=0)

# --- sensors_app (Sensors Analytics export) -----------------------------------------------------------
LIB_IOS = {"$lib": "iOS", "$lib_method": "autoTrack", "$lib_version": "4.7.1"}
LIB_ANDROID = {"$lib": "Android", "$lib_method": "autoTrack", "$lib_version": "6.8.0"}
LIB_IOS_OLD = {"$lib": "iOS", "$lib_method": "autoTrack", "$lib_version": "2.1.0"}
case("part-00000.jsonl", "sensors_app", text([
    j({"_track_id": 218372911, "time": T0_MS, "type": "track", "distinct_id": "U00000001", "anonymous_id": IDFV,
       "identities": {"$identity_idfv": IDFV, "$identity_login_id": "U00000001", "$identity_mobile": "13912345678"},
       "event": "$AppStart",
       "properties": {"$os": "iOS", "$os_version": "17.5.1", "$model": "iPhone15,2", "$device_id": IDFV,
                      "$lib": "iOS", "$lib_version": "4.7.1", "$is_first_time": False,
                      "$resume_from_background": False, "app_name": "shop"},
       "lib": LIB_IOS, "login_id": "U00000001", "project": "default", "_flush_time": 1793495703456}),
    j({"_track_id": -1240312345, "time": 1793495762123, "type": "track", "distinct_id": ANDROID,
       "anonymous_id": ANDROID, "identities": {"$identity_android_id": ANDROID}, "event": "$AppViewScreen",
       "properties": {"$os": "Android", "$device_id": ANDROID, "$screen_name": "com.shop.ui.ProductActivity",
                      "$title": "商品详情", "sku": "SKU1001", "price": 129.9, "app_name": "shop"},
       "lib": LIB_ANDROID, "project": "default"}),
    j({"event": "search", "distinct_id": "U00000001", "time": 1793495822123, "_track_id": 218372913, "type": "track",
       "identities": {"$identity_login_id": "U00000001"},
       "properties": {"$os": "iOS", "$device_id": IDFV, "keyword": "羽绒服", "results": 24, "app_name": "shop"},
       "project": "default"}),
    j({"_track_id": 218372914, "time": 1793495882123, "type": "track", "distinct_id": "U00000001",
       "identities": {"$identity_login_id": "U00000001"}, "event": "$AppEnd",
       "properties": {"$os": "iOS", "$device_id": IDFV, "$event_duration": 35.2, "app_name": "shop"},
       "project": "default"}),
    j({"_track_id": 218372915, "time": 1793495942123, "type": "track", "distinct_id": "b2c3d4e5f6a70891",
       "identities": {"$identity_android_id": "b2c3d4e5f6a70891"}, "event": "$AppStart",
       "properties": {"$os": "HarmonyOS", "$device_id": "b2c3d4e5f6a70891", "app_name": "shop"},
       "project": "default"}),
    j({"_track_id": 218372916, "time": 1793496002123, "type": "profile_set", "distinct_id": "U00000001",
       "identities": {"$identity_login_id": "U00000001"}, "properties": {"$city": "上海", "gender": "F"},
       "project": "default"}),
    j({"_track_id": 218372917, "time": 1793496062123, "type": "track", "distinct_id": "U00000007",
       "identities": {"$identity_login_id": "U00000007", "$identity_mobile": FW_PHONE,
                      "$identity_mp_unionid": "oUnion_007"},
       "event": "login",
       "properties": {"$os": "Android", "$device_id": "c3d4e5f6a7b80912", "method": "wechat", "app_name": "shop"},
       "login_id": "U00000007", "project": "default"}),
    j({"_track_id": 218372918, "type": "track", "distinct_id": "U00000001",
       "identities": {"$identity_login_id": "U00000001"}, "event": "$AppViewScreen",
       "properties": {"$os": "iOS", "$device_id": IDFV, "app_name": "shop"}, "project": "default"}),
    j({"time": 1793496182123, "type": "track", "distinct_id": "U00000009",
       "identities": {"$identity_login_id": "U00000009"}, "event": "$AppViewScreen",
       "properties": {"$os": "iOS", "$device_id": "4A5B6C7D-0000-4000-8000-000000000009",
                      "$screen_name": "HomeViewController", "app_name": "shop"},
       "lib": LIB_IOS_OLD, "project": "default"}),
    '{"_track_id":218372920,"time":1793496242123,"type":"track","distinct_id":"U0000',
]), lines=10, records=10, loaded=[
    L(1, event_id="U00000001-1793495702123-218372911", device_id=IDFV, login_id="U00000001", phone="13912345678",
      platform="ios", event_name="app_start", event_time=T0, props={"app_name": "shop"},
      _extra={"type": "track", "anonymous_id": IDFV, "lib": LIB_IOS, "login_id": "U00000001",
              "project": "default", "_flush_time": 1793495703456}),
    L(2, event_id=f"{ANDROID}-1793495762123--1240312345", device_id=ANDROID, platform="android",
      event_name="page_view", event_time="2026-11-01T01:16:02.123000Z",
      props={"sku": "SKU1001", "price": 129.9, "app_name": "shop"},
      _extra={"type": "track", "anonymous_id": ANDROID, "lib": LIB_ANDROID, "project": "default"}),
    L(3, event_id="U00000001-1793495822123-218372913", device_id=IDFV, login_id="U00000001", platform="ios",
      event_name="search", event_time="2026-11-01T01:17:02.123000Z",
      props={"keyword": "羽绒服", "results": 24, "app_name": "shop"}, _extra={"type": "track", "project": "default"}),
    L(7, event_id="U00000007-1793496062123-218372917", device_id="c3d4e5f6a7b80912", login_id="U00000007",
      phone="13912345678", unionid="oUnion_007", platform="android", event_name="login",
      event_time="2026-11-01T01:21:02.123000Z", props={"method": "wechat", "app_name": "shop"},
      _extra={"type": "track", "login_id": "U00000007", "project": "default"}),
    L(9, event_id="U00000009-1793496182123", device_id="4A5B6C7D-0000-4000-8000-000000000009",
      login_id="U00000009", platform="ios", event_name="page_view", event_time="2026-11-01T01:23:02.123000Z",
      props={"app_name": "shop"}, _extra={"type": "track", "lib": LIB_IOS_OLD, "project": "default"}),
], quarantined=[
    Q(4, "expect_column_values_to_be_in_set: event_name"),  # $AppEnd: kept by the preset, not an event of the model
    Q(5, "bad_value: platform"), Q(6, "missing_required: event_name"), Q(8, "missing_required: event_time"),
    Q(10, "malformed_json"),
])

# --- segment_web (Segment spec) ----------------------------------------------------------------------
AJS_LIB = {"name": "analytics.js", "version": "4.1.0"}
PAGE_PROPS = {"path": "/", "referrer": "", "title": "Shop", "url": "https://shop.example.com/"}
ORDER_PROPS = {"order_id": "O2026110100000101", "total": 1299, "currency": "CNY",
               "products": [{"sku": "SKU1001", "quantity": 1}]}
case("part-00000.jsonl", "segment_web", text([
    j({"anonymousId": AJS, "channel": "client",
       "context": {"ip": "203.0.113.7", "library": AJS_LIB, "locale": "zh-CN", "page": PAGE_PROPS,
                   "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"},
       "messageId": "ajs-next-0001", "name": "Home", "properties": PAGE_PROPS,
       "receivedAt": "2026-11-01T01:15:03.001Z", "sentAt": "2026-11-01T01:15:02.200Z",
       "timestamp": "2026-11-01T01:15:02.123Z", "type": "page", "userId": None}),
    j({"anonymousId": AJS, "channel": "client",
       "context": {"library": AJS_LIB, "traits": {"phone": "+86 139 1234 5678", "email": "amy@example.com"}},
       "event": "Product Viewed", "messageId": "ajs-next-0002",
       "properties": {"product_id": "SKU1001", "price": 129.9, "currency": "CNY", "quantity": 1},
       "receivedAt": "2026-11-01T01:16:03.001Z", "sentAt": "2026-11-01T01:16:02.200Z",
       "timestamp": "2026-11-01T01:16:02.123Z", "type": "track", "userId": "U00000002"}),
    j({"anonymousId": AJS, "channel": "client", "context": {"library": AJS_LIB}, "messageId": "ajs-next-0003",
       "timestamp": "2026-11-01T01:17:02.123Z", "traits": {"phone": "13912345678", "unionid": "oUnion_002"},
       "type": "identify", "userId": "U00000002"}),
    j({"anonymousId": "B7E1C2D3-0004-4000-8000-000000000004",
       "context": {"device": {"id": IDFV, "manufacturer": "Apple", "model": "iPhone15,2"},
                   "library": {"name": "analytics-ios", "version": "4.1.8"}, "os": {"name": "iOS", "version": "17.5.1"},
                   "traits": {"unionid": "oUnion_004", "phone": FW_PHONE}},
       "event": "Order Completed", "messageId": "4E5F6A7B-0004", "properties": ORDER_PROPS,
       "timestamp": "2026-11-01T09:18:02.123+08:00", "type": "track", "userId": "U00000004",
       "integrations": {"All": True}}),
    j({"anonymousId": None, "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
       "event": "Order Refunded", "messageId": "py-0005", "properties": {"order_id": "O2026110100000099"},
       "timestamp": "2026-11-01T01:19:02.123Z", "type": "track", "userId": "U00000005"}),
    j({"anonymousId": AJS, "context": {"library": AJS_LIB}, "event": "Added to Cart",
       "properties": {"sku": "SKU2002"}, "timestamp": "2026-11-01T01:20:02.123Z", "type": "track", "userId": None}),
    j({"type": "page", "timestamp": "2026-11-01T01:21:02.123Z", "properties": {"path": "/cart"},
       "messageId": "ajs-next-0007", "anonymousId": AJS, "name": "Cart"}),
    j({"anonymousId": AJS, "context": {"library": AJS_LIB}, "messageId": "ajs-next-0008", "name": "Search",
       "properties": {"path": "/search"}, "timestamp": "2026-11-01T01:22:02.123", "type": "page"}),
]), lines=8, records=8, loaded=[
    L(1, event_id="ajs-next-0001", device_id=AJS, platform="web", event_name="page_view", event_time=T0,
      props=PAGE_PROPS, _extra={"channel": "client", "name": "Home", "receivedAt": "2026-11-01T01:15:03.001Z",
                                "sentAt": "2026-11-01T01:15:02.200Z"}),
    L(2, event_id="ajs-next-0002", device_id=AJS, login_id="U00000002", phone="+86 139 1234 5678", platform="web",
      event_name="view_item", event_time="2026-11-01T01:16:02.123000Z",  # the spec's "Product Viewed"
      props={"product_id": "SKU1001", "price": 129.9, "currency": "CNY", "quantity": 1},
      _extra={"channel": "client", "receivedAt": "2026-11-01T01:16:03.001Z", "sentAt": "2026-11-01T01:16:02.200Z"}),
    L(4, event_id="4E5F6A7B-0004", device_id=IDFV, login_id="U00000004", phone="13912345678", unionid="oUnion_004",
      platform="ios", event_name="pay_order", event_time="2026-11-01T01:18:02.123000Z", props=ORDER_PROPS,
      _extra={"integrations": {"All": True}}),
    L(7, event_id="ajs-next-0007", device_id=AJS, event_name="page_view", event_time="2026-11-01T01:21:02.123000Z",
      props={"path": "/cart"}, _extra={"name": "Cart"}),
], quarantined=[
    Q(3, "missing_required: event_name"), Q(5, "bad_value: platform"), Q(6, "missing_required: event_id"),
    Q(8, "bad_timestamp: event_time"),
])

# --- wechat (plain JSON lines, declared UTF-8; some lines carry GBK bytes) --------------------------
WX = {"event_id": "wx-0001", "appid": "wx_mp_shop", "openid": "oOpen_001", "unionid": "oUnion_001", "phone": None,
      "event_name": "mp_open", "event_time": "2026-11-01T09:15:02.123+08:00", "props": {"page": "index"}}


def wx(**over) -> str:
    return j({**WX, **over})


case("part-00000.jsonl", "wechat", b"".join([
    (wx() + "\n").encode(),
    (wx(event_id="wx-0002", props={"page": "首页"}) + "\n").encode("gbk"),
    (wx(event_id="wx-0003", props={"page": "首页"}) + "\n").encode(),
    (wx(event_id="wx-0004", phone=FW_PHONE, event_name="phone_auth", event_time="2026-11-01T09:16:02.123",
        props=None) + "\n").encode(),
    (wx(event_id=None) + "\n").encode(),
    (wx(event_id=None, props={"page": "首页"}) + "\n").encode("gbk"),
    ('{"event_id":"wx-0007","props":{"page":"首页' + "\n").encode("gbk"),
]), lines=7, records=7, loaded=[
    L(1, event_id="wx-0001", appid="wx_mp_shop", openid="oOpen_001", unionid="oUnion_001", event_name="mp_open",
      event_time=T0, props={"page": "index"}),
    L(3, event_id="wx-0003", appid="wx_mp_shop", openid="oOpen_001", unionid="oUnion_001", event_name="mp_open",
      event_time=T0, props={"page": "首页"}),
    L(4, event_id="wx-0004", appid="wx_mp_shop", openid="oOpen_001", unionid="oUnion_001", phone="13912345678",
      event_name="phone_auth", event_time="2026-11-01T01:16:02.123000Z"),
], quarantined=[
    Q(2, "bad_encoding"), Q(5, "missing_required: event_id"), Q(6, "bad_encoding"), Q(7, "bad_encoding"),
])

# --- wechat_export (naive local times, keys in the backend's order) ---------------------------------
case("part-00000.jsonl", "wechat_export", text([
    j({"event_time": "2026-11-01 09:15:02.123", "openid": "oOpen_101", "appid": "wx_mp_shop", "event_name": "mp_open",
       "event_id": "we-0001", "unionid": None, "phone": None, "props": {"page": "index", "scene": 1089},
       "server": "mp-log-01"}),
    j({"event_time": "2026-11-01 09:16:02.123", "openid": "oOpen_101", "appid": "wx_mp_shop",
       "event_name": "phone_auth", "event_id": "we-0002", "unionid": "oUnion_101", "phone": 13912345678,
       "server": "mp-log-01"}),
    j({"event_time": "2026-11-01 09:17:02.123", "openid": "oOpen_103", "appid": "wx_mp_shop",
       "event_name": "phone_auth", "event_id": "we-0003", "unionid": None, "phone": "１３９－１２３４－５６７８",
       "server": "mp-log-01"}),
    j({"event_time": "2026-11-01T09:15:02.123+08:00", "openid": "oOpen_104", "appid": "wx_mp_shop",
       "event_name": "mp_open", "event_id": "we-0004", "server": "mp-log-01"}),
    j({"event_time": "2026-11-01 09:15:02", "openid": "oOpen_105", "appid": "wx_mp_shop", "event_name": "mp_open",
       "event_id": "we-0005", "server": "mp-log-01"}),
    j({"event_time": "2026-11-01 23:59:59.999", "openid": "oOpen_106", "appid": "wx_mp_shop",
       "event_name": "mp_view_item", "event_id": "we-0006", "props": {"sku": "SKU1001", "category": "apparel"},
       "server": "mp-log-02"}),
    j({"event_time": "2026-11-01 10:00:00.000", "appid": "wx_mp_shop", "event_name": "mp_open", "event_id": "we-0007",
       "server": "mp-log-02"}),
    "",
    '{"event_time":"2026-11-01 10:00:00.000","openid":"oOpen_109","appid":"wx_mp_sh',
    j({"event_time": "2026-11-01 10:00:00.000", "openid": "oOpen_110", "appid": "wx_oa_brand",
       "event_name": "oa_click", "event_id": "we-0010", "props": {"page": "menu_new"}, "server": "mp-log-02",
       "unionid": "unknown"}),
]), lines=10, records=10, loaded=[
    L(1, event_id="we-0001", appid="wx_mp_shop", openid="oOpen_101", event_name="mp_open", event_time=T0,
      props={"page": "index", "scene": 1089}, _extra={"server": "mp-log-01"}),
    L(2, event_id="we-0002", appid="wx_mp_shop", openid="oOpen_101", unionid="oUnion_101", phone="13912345678",
      event_name="phone_auth", event_time="2026-11-01T01:16:02.123000Z", _extra={"server": "mp-log-01"}),
    L(3, event_id="we-0003", appid="wx_mp_shop", openid="oOpen_103", phone="139-1234-5678", event_name="phone_auth",
      event_time="2026-11-01T01:17:02.123000Z", _extra={"server": "mp-log-01"}),
    L(6, event_id="we-0006", appid="wx_mp_shop", openid="oOpen_106", event_name="mp_view_item",
      event_time="2026-11-01T15:59:59.999000Z", props={"sku": "SKU1001", "category": "apparel"},
      _extra={"server": "mp-log-02"}),
    L(10, event_id="we-0010", appid="wx_oa_brand", openid="oOpen_110", unionid="unknown", event_name="oa_click",
      event_time="2026-11-01T02:00:00.000000Z", props={"page": "menu_new"}, _extra={"server": "mp-log-02"}),
], quarantined=[
    Q(4, "bad_timestamp: event_time"), Q(5, "bad_timestamp: event_time"), Q(7, "missing_required: openid"),
    Q(8, "empty_line"), Q(9, "malformed_json"),
])

# --- wechat_oa (own source: official-account event pushes, epoch seconds, expr, values) -------------
GH = "gh_3a5b7c9d1e2f"
case("part-00000.jsonl", "wechat_oa", text([
    j({"ToUserName": GH, "FromUserName": "oOA_0001", "CreateTime": T0_S, "MsgType": "event", "Event": "subscribe",
       "EventKey": "qrscene_store_S0001"}),
    j({"ToUserName": GH, "FromUserName": "oOA_0002", "CreateTime": 1793495722, "MsgType": "event", "Event": "CLICK",
       "EventKey": "MENU_NEW"}),
    j({"ToUserName": GH, "FromUserName": "oOA_0003", "CreateTime": 1793495742, "MsgType": "event",
       "Event": "unsubscribe", "EventKey": ""}),
    j({"ToUserName": GH, "FromUserName": "oOA_0004", "CreateTime": "1793495762", "MsgType": "event",
       "Event": "subscribe", "EventKey": "qrscene_store_S0002"}),
    j({"ToUserName": GH, "FromUserName": "oOA_0005", "CreateTime": 1793495782, "MsgType": "event", "Event": "VIEW",
       "EventKey": "https://shop.example.com/"}),
    j({"ToUserName": GH, "CreateTime": 1793495802, "MsgType": "event", "Event": "CLICK", "EventKey": "MENU_NEW"}),
]), lines=6, records=6, loaded=[
    L(1, event_id=f"oOA_0001-{T0_S}", appid=GH, openid="oOA_0001", event_name="oa_follow",
      event_time="2026-11-01T01:15:02.000000Z", _extra={"MsgType": "event", "EventKey": "qrscene_store_S0001"}),
    L(2, event_id="oOA_0002-1793495722", appid=GH, openid="oOA_0002", event_name="oa_click",
      event_time="2026-11-01T01:15:22.000000Z", _extra={"MsgType": "event", "EventKey": "MENU_NEW"}),
    L(4, event_id="oOA_0004-1793495762", appid=GH, openid="oOA_0004", event_name="oa_follow",
      event_time="2026-11-01T01:16:02.000000Z", _extra={"MsgType": "event", "EventKey": "qrscene_store_S0002"}),
], quarantined=[
    Q(3, "bad_value: event_name"), Q(5, "bad_value: event_name"), Q(6, "missing_required: openid"),
])


# === the independent parse ==========================================================================
# The Segment spec's semantic event names -> the model's (E-commerce, Mobile and B2B SaaS specs).
SEGMENT_SPEC = {"Application Opened": "app_start", "Products Searched": "search", "Product Viewed": "view_item",
                "Product Added": "add_cart", "Order Completed": "pay_order", "Signed In": "login",
                "Signed Up": "register", "Product Shared": "share"}
SEGMENT_EVENT = (
    "CASE WHEN type = 'page' THEN 'page_view' WHEN type = 'track' THEN CASE event "
    + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in SEGMENT_SPEC.items()) + " ELSE event END END"
)
# Preset mappings as documented by the vendors (a copy: spark_jobs is not imported here).
PRESETS = {
    "sensors": {
        "event_id": {"expr": "concat_ws('-', distinct_id, `time`, `_track_id`)"},
        "device_id": {"from": "properties.$device_id"},
        "login_id": {"from": "identities.$identity_login_id"},
        "phone": {"from": "identities.$identity_mobile"},
        "unionid": {"from": "identities.$identity_mp_unionid"},
        "platform": {"from": "properties.$os", "values": {"iOS": "ios", "Android": "android"}},
        "event_name": {"from": "event", "values": {"$AppStart": "app_start", "$AppViewScreen": "page_view"},
                       "other": "keep"},
        "event_time": {"from": "time", "formats": ["epoch_ms"]},
        "props": {"from": "properties", "object": "$"},
    },
    "segment": {
        "event_id": {"from": "messageId"},
        "device_id": {"expr": "coalesce(`context.device.id`, anonymousId)"},
        "login_id": {"from": "userId"},
        "phone": {"from": "context.traits.phone"},
        "unionid": {"from": "context.traits.unionid"},
        "platform": {"from": "context.library.name",
                     "values": {"analytics.js": "web", "analytics-ios": "ios", "analytics-android": "android"}},
        "event_name": {"expr": SEGMENT_EVENT},
        "event_time": {"from": "timestamp", "formats": ["iso"]},
        "props": {"from": "properties"},
    },
}


def _concat_ws(sep, vals):
    return sep.join(v for v in vals if v is not None)


# expr -> (the columns / paths it reads, its meaning over their text values)
EXPRS = {
    "concat_ws('-', distinct_id, `time`, `_track_id`)": (("distinct_id", "time", "_track_id"),
                                                        lambda v: _concat_ws("-", v)),
    "coalesce(`context.device.id`, anonymousId)": (("context.device.id", "anonymousId"),
                                                   lambda v: next((x for x in v if x is not None), None)),
    SEGMENT_EVENT: (("type", "event"), lambda v: "page_view" if v[0] == "page" else SEGMENT_SPEC.get(v[1], v[1])
                    if v[0] == "track" else None),
    "concat(`商家编码`, ':', `购买数量`)": (("商家编码", "购买数量"),
                                   lambda v: None if None in v else f"{v[0]}:{v[1]}"),
    "concat_ws('-', FromUserName, CreateTime)": (("FromUserName", "CreateTime"), lambda v: _concat_ws("-", v)),
}

WS = " \t\r\n\f\v"


def as_text(v):
    """A present text value: trimmed, '' -> None; a JSON number is its JSON text."""
    if v is None:
        return None
    if isinstance(v, bool) or isinstance(v, dict | list):
        raise AssertionError(f"corpus avoids {type(v).__name__} where text is expected: {v!r}")
    if isinstance(v, int | float):
        v = json.dumps(v)
    v = v.strip(WS)
    return v or None


def fmt_ts(d: dt.datetime) -> str:
    return d.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})?")
_TOKENS = {"yyyy": r"(?P<y>\d{4})", "MM": r"(?P<mo>\d{2})", "dd": r"(?P<d>\d{2})", "HH": r"(?P<h>\d{2})",
           "mm": r"(?P<mi>\d{2})", "ss": r"(?P<s>\d{2})", "SSS": r"(?P<f>\d{3})"}


def _pattern(p: str) -> re.Pattern:
    out, i = "", 0
    while i < len(p):
        for tok, rx in _TOKENS.items():
            if p.startswith(tok, i):
                out, i = out + rx, i + len(tok)
                break
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out)


def parse_time(raw, formats, tz: str, date_only=False):
    """The instant (or date) in the first format that reads `raw`; None when none does."""
    for f in formats:
        try:
            if f in ("epoch_ms", "epoch_s"):
                if isinstance(raw, int) and not isinstance(raw, bool):
                    n = raw
                elif isinstance(raw, str) and re.fullmatch(r"\d+", raw):
                    n = int(raw)
                else:
                    continue
                unit = dt.timedelta(milliseconds=n) if f == "epoch_ms" else dt.timedelta(seconds=n)
                return fmt_ts(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + unit)
            if not isinstance(raw, str):
                continue
            if f in ("iso", "iso_local"):
                m = _ISO.fullmatch(raw)
                if not m or (m.group(8) is None) != (f == "iso_local"):
                    continue
                d = dt.datetime.fromisoformat(raw)
                return fmt_ts(d if f == "iso" else d.replace(tzinfo=ZoneInfo(tz)))
            m = _pattern(f).fullmatch(raw)
            if not m:
                continue
            g = {k: int(v) for k, v in m.groupdict().items()}
            if date_only:
                return dt.date(g["y"], g["mo"], g["d"]).isoformat()
            d = dt.datetime(g["y"], g["mo"], g["d"], g.get("h", 0), g.get("mi", 0), g.get("s", 0),
                            g.get("f", 0) * 1000, tzinfo=ZoneInfo(tz))
            return fmt_ts(d)
        except ValueError:
            continue
    return None


def parse_decimal(raw: str, spec: dict | None, precision: int, scale: int):
    s, spec = raw, spec or {}
    for sym in spec.get("symbols") or []:
        if s.startswith(sym):
            s = s[len(sym):]
            break
        if s.endswith(sym):
            s = s[: -len(sym)]
            break
    th = spec.get("thousands")
    if th and th in s:
        m = re.fullmatch(r"(\d{1,3}(?:" + re.escape(th) + r"\d{3})+)(?:\.(\d+))?", s)
    else:
        m = re.fullmatch(r"(\d+)(?:\.(\d+))?", s)
    if not m:
        return None
    whole, frac = m.group(1).replace(th, "") if th else m.group(1), m.group(2) or ""
    if len(frac) > scale or len(whole.lstrip("0")) > precision - scale:
        return None  # rounding or overflow would change the value
    return str(Decimal(f"{whole}.{frac or '0'}").quantize(Decimal(1).scaleb(-scale)))


def get_path(rec: dict, path: str, is_json: bool):
    if not is_json:
        return rec.get(path)
    cur = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def field_specs(src: dict, model: str) -> dict[str, dict]:
    preset = PRESETS.get(src.get("preset"), {})
    specs = {}
    for col in CHANNEL_FIELDS[model]:
        spec = src.get("fields", {}).get(col.name, preset.get(col.name, {}))
        spec = {"from": spec} if isinstance(spec, str) else dict(spec)
        if "expr" not in spec:
            spec.setdefault("from", col.name)
        specs[col.name] = spec
    return specs


def referenced(specs: dict, is_json: bool) -> set[str]:
    refs = set()
    for spec in specs.values():
        paths = EXPRS[spec["expr"]][0] if "expr" in spec else (spec["from"],)
        refs |= {p.split(".")[0] if is_json else p for p in paths}
    return refs


# Row-level rules (the silver tables' requirements, checked per record): the model's event names,
# amounts of at least 0, the CRM's genders and tiers in any case.
EVENTS = {
    "app_events": {"app_start", "page_view", "search", "view_item", "add_cart", "pay_order", "login", "register", "share"},
    "wechat": {"mp_open", "mp_view_item", "mp_add_cart", "mp_pay", "oa_follow", "oa_click", "phone_auth"},
}


def rule_broken(model: str, out: dict) -> str | None:
    if model in EVENTS and out.get("event_name") not in EVENTS[model]:
        return "expect_column_values_to_be_in_set: event_name"
    if model in ("orders", "pos") and out["amount"].startswith("-"):  # the exact decimal text
        return "expect_column_values_to_be_between: amount"
    if model == "crm":
        for name, allowed in (("gender", {"m", "f"}), ("tier", {"normal", "silver", "gold", "platinum"})):
            v = out.get(name)
            if v is not None and not (v.lower() in allowed and v in (v.lower(), v.upper(), v.capitalize())):
                return f"expect_column_values_to_be_in_set: {name}"
    return None


def map_record(rec: dict, src: dict, model: str, specs: dict, is_json: bool):
    """(loaded record, None) or (None, reason)."""
    out, idents = {}, src.get("identifiers", {})
    tz = src.get("timezone", DEFAULT_TZ)
    for col in CHANNEL_FIELDS[model]:
        spec = specs[col.name]
        if "expr" in spec:
            paths, fn = EXPRS[spec["expr"]]
            raw = as_text(fn([as_text(get_path(rec, p, is_json)) for p in paths]))
        else:
            raw = get_path(rec, spec["from"], is_json)
        if col.name == "props":  # a JSON object field
            if raw is not None:
                assert isinstance(raw, dict), raw
                prefix = spec.get("object")
                raw = {k: v for k, v in raw.items() if not (prefix and k.startswith(prefix))}
            out[col.name] = raw
            continue
        if col.type == "timestamp" and isinstance(raw, int) and not isinstance(raw, bool):
            value = raw  # a JSON number: only epoch formats read it
        else:
            value = as_text(raw)
        if value is None:
            if not col.nullable:
                return None, f"missing_required: {col.name}"
            out[col.name] = None
            continue
        if col.type == "string":
            if col.name in idents:
                value = unicodedata.normalize("NFKC", value)
            if "values" in spec:
                if value in spec["values"]:
                    value = spec["values"][value]
                elif spec.get("other") != "keep":
                    return None, f"bad_value: {col.name}"
        elif col.type == "timestamp":
            value = parse_time(value, spec.get("formats", ["iso"]), tz)
            if value is None:
                return None, f"bad_timestamp: {col.name}"
        elif col.type == "date":
            value = parse_time(value, spec.get("formats", ["yyyy-MM-dd"]), tz, date_only=True)
            if value is None:
                return None, f"bad_date: {col.name}"
        else:
            p, s = map(int, re.fullmatch(r"decimal\((\d+),\s*(\d+)\)", col.type).groups())
            value = parse_decimal(value, spec.get("number"), p, s)
            if value is None:
                return None, f"bad_number: {col.name}"
        out[col.name] = value
    broken = rule_broken(model, out)
    if broken:
        return None, broken
    refs = referenced(specs, is_json)
    extra = {k: v for k, v in rec.items() if k not in refs}
    for k, v in extra.items():  # the corpus keeps _extra unambiguous: no empty or padded text
        assert v is not None and (not isinstance(v, str) or (v and v == v.strip(WS))), (k, v)
    if extra:
        out["_extra"] = extra
    return out, None


def physical_lines(data: bytes, encoding: str) -> list[tuple[str, bool]]:
    """(decoded line with its '\\n', decodes cleanly) for each physical line."""
    if encoding == "utf-16":
        text_ = data.decode("utf-16")
        parts = [(p, True) for p in text_.split("\n")]
    else:
        codec = {"utf-8-sig": "utf-8"}.get(encoding, encoding)
        parts = []
        for b in data.split(b"\n"):
            try:
                parts.append((b.decode(codec), True))
            except UnicodeDecodeError:
                parts.append((b.decode(codec, "replace"), False))
    last = parts.pop()
    lines = [(t + "\n", ok) for t, ok in parts]
    if last[0]:
        lines.append(last)
    if lines and lines[0][0].startswith("\ufeff"):
        lines[0] = (lines[0][0][1:], lines[0][1])
    return lines


def parse_file(data: bytes, src: dict) -> dict:
    model = src.get("model")
    encoding = src.get("encoding", "utf-8")
    is_json = src["format"] == "jsonl"
    csv_opts = src.get("csv", {})
    header_row = not is_json and csv_opts.get("header", True)
    lines = physical_lines(data, encoding)
    result = {"lines": len(lines) - (1 if header_row and lines else 0), "file_reason": None,
              "loaded": [], "quarantined": []}
    # A file declared GBK / GB18030 whose non-ASCII bytes are valid UTF-8 is UTF-8: reject it whole.
    whole_file = None
    if encoding in ("gb18030", "gbk") and any(b > 0x7F for b in data):
        try:
            data.decode("utf-8")
            whole_file = "bad_encoding"
        except UnicodeDecodeError:
            pass

    # records: (start line, raw text, decodes cleanly, parsed value or None, structural reason)
    records = []
    if is_json:
        for i, (t, ok) in enumerate(lines, 1):
            raw, reason, value = t.rstrip("\n"), None, None
            if raw.strip(WS) == "":
                reason = "empty_line"
            elif not ok:
                reason = "bad_encoding"
            else:
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError:
                    value = None
                if not isinstance(value, dict):
                    reason = "malformed_json"
            records.append((i, reason, value))
    else:
        reader = csv.reader((t for t, _ in lines), delimiter=csv_opts.get("delimiter", ","),
                            quotechar=csv_opts.get("quote", '"'), doublequote=True, strict=True)
        prev = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                span = lines[prev:]
                reason = "bad_encoding" if not all(ok for _, ok in span) else "malformed_csv"
                records.append((prev + 1, reason, None))
                break
            span, start, prev = lines[prev:reader.line_num], prev + 1, reader.line_num
            raw = "".join(t for t, _ in span)
            if raw.strip(WS) == "":
                records.append((start, "empty_line", None))
            elif not all(ok for _, ok in span):
                records.append((start, "bad_encoding", None))
            else:
                records.append((start, None, row))
    columns = None
    specs = field_specs(src, model)
    if header_row:
        if not records:
            result["records"] = 0
            return result
        _, _, columns = records.pop(0)
        required_cols = set()
        for col in CHANNEL_FIELDS[model]:
            if not col.nullable:
                spec = specs[col.name]
                required_cols |= set(EXPRS[spec["expr"]][0] if "expr" in spec else (spec["from"],))
        if whole_file is None and (len(set(columns)) != len(columns) or not required_cols <= set(columns)):
            whole_file = "bad_header"
    elif not is_json:
        columns = csv_opts["columns"]
    result["records"] = len(records)
    if whole_file:
        result["file_reason"] = whole_file
        result["quarantined"] = [{"_line": n, "reason": whole_file} for n, _, _ in records]
        return result
    for n, reason, value in records:
        if reason is None and not is_json:
            if len(value) != len(columns):
                reason = f"wrong_column_count: expected {len(columns)}, got {len(value)}"
            else:
                value = dict(zip(columns, value, strict=True))
        if reason is None:
            rec, reason = map_record(value, src, model, specs, is_json)
        if reason is None:
            result["loaded"].append({"_line": n, **rec})
        else:
            result["quarantined"].append({"_line": n, "reason": reason})
    return result


# === expected.json, writing and checking =============================================================
def expected_entry(c: Case, sources: dict) -> dict:
    model = sources[c.source].get("model", c.source)
    names = [col.name for col in CHANNEL_FIELDS[model]]
    loaded = []
    for rec in c.loaded:
        unknown = set(rec) - {"_line", "_extra", *names}
        assert not unknown, f"{c.path}: not fields of {model}: {unknown}"
        full = {"_line": rec["_line"], **{n: rec.get(n) for n in names}}
        if "_extra" in rec:
            full["_extra"] = rec["_extra"]
        loaded.append(full)
    return {"source": c.source, "lines": c.lines, "records": c.records, "file_reason": c.file_reason,
            "loaded": loaded, "quarantined": c.quarantined}


def self_checks() -> list[str]:
    """Facts about the bytes that the corpus relies on (each file's quirk really is in it)."""
    by = {c.path: c.data for c in CASES}
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    need("𠮷".encode("gb18030") and not _encodes("𠮷", "gbk"), "𠮷 must need GB18030 (not GBK)")
    for p in ("crm/2026-11-01/part-00006.csv", "wechat/2026-11-01/part-00000.jsonl"):
        need(not _decodes(by[p], "utf-8"), f"{p} must hold invalid UTF-8")
    need(_decodes(by["crm_excel/2026-11-01/part-00001.csv"], "utf-8")
         and not _decodes(by["crm_excel/2026-11-01/part-00001.csv"], "gb18030"),
         "crm_excel part-00001 must be UTF-8 that strict GB18030 rejects")
    need(_decodes(by["crm_legacy/2026-11-01/part-00001.csv"], "utf-8")
         and _decodes(by["crm_legacy/2026-11-01/part-00001.csv"], "gbk"),
         "crm_legacy part-00001 must be UTF-8 that GBK decodes (to mojibake)")
    need(not _decodes(by["crm_excel/2026-11-01/part-00000.csv"], "utf-8"), "crm_excel part-00000 must not be UTF-8")
    pos = by["pos_export/2026-11-01/part-00001.csv"]
    need(pos.count(b"\n") != pos.decode("utf-16").count("\n"), "pos_export part-00001 must hold a stray 0x0A byte")
    need(pos[:2] == b"\xff\xfe", "pos_export files start with the UTF-16LE BOM")
    for p in ("shop_orders/2026-11-01/part-00000.csv", "crm/2026-11-01/part-00002.csv",
              "app_events/2026-11-01/part-00002.jsonl", "tmall_orders/2026-11-01/part-00000.csv"):
        need(by[p].startswith(b"\xef\xbb\xbf"), f"{p} must start with a UTF-8 BOM")
    for p in ("crm/2026-11-01/part-00005.csv", "app_events/2026-11-01/part-00002.jsonl",
              "shop_orders/2026-11-01/part-00002.csv"):
        need(not by[p].endswith(b"\n"), f"{p} must not end with a newline")
    need(dt.datetime(2026, 11, 1, 1, 15, 2, 123000, tzinfo=dt.UTC).timestamp() * 1000 == T0_MS, "T0_MS")
    return problems


def _decodes(b: bytes, codec: str) -> bool:
    try:
        b.decode(codec)
        return True
    except UnicodeDecodeError:
        return False


def _encodes(s: str, codec: str) -> bool:
    try:
        s.encode(codec)
        return True
    except UnicodeEncodeError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify the files on disk; write nothing")
    args = ap.parse_args()
    sources = yaml.safe_load((HERE / "sources.yaml").read_text(encoding="utf-8"))["sources"]
    for name, src in sources.items():
        src.setdefault("model", name)
    paths = [c.path for c in CASES]
    assert len(set(paths)) == len(paths), "duplicate case paths"
    expected = {c.path: expected_entry(c, sources) for c in CASES}
    expected_text = json.dumps(expected, ensure_ascii=False, indent=2) + "\n"

    problems = self_checks()
    for c in CASES:
        exp = expected[c.path]
        assert exp["records"] == len(exp["loaded"]) + len(exp["quarantined"]), f"{c.path}: records"
        got = parse_file(c.data, sources[c.source])
        for key in ("lines", "records", "file_reason", "loaded", "quarantined"):
            if got[key] != exp[key]:
                problems.append(f"{c.path}: {key}\n  hand:   {exp[key]}\n  parsed: {got[key]}")
    if args.check:
        on_disk = {p.relative_to(LANDING).as_posix() for p in LANDING.rglob("*") if p.is_file()}
        if on_disk != set(paths):
            problems.append(f"landing/ holds other files: {sorted(on_disk ^ set(paths))}")
        for c in CASES:
            f = LANDING / c.path
            if f.is_file() and f.read_bytes() != c.data:
                problems.append(f"{c.path}: bytes differ from make_corpus.py")
        if (HERE / "expected.json").read_text(encoding="utf-8") != expected_text:
            problems.append("expected.json differs from make_corpus.py")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    if not args.check:
        for c in CASES:
            f = LANDING / c.path
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(c.data)
        (HERE / "expected.json").write_text(expected_text, encoding="utf-8")
    print(f"{len(CASES)} files, {sum(len(c.loaded) for c in CASES)} loaded and "
          f"{sum(len(c.quarantined) for c in CASES)} quarantined records: hand expectations and the "
          f"independent parse agree{' (files on disk verified)' if args.check else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
