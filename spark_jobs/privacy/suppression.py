"""Suppressions: reads and appends ops_suppressions (keyed tokens of erased people's identifiers) and flags
the records of a new batch that carry one, so that ingest counts them instead of loading them again.

The table holds no identifier, only HMAC-SHA-256 tokens under the project key (spark_jobs.privacy.tokens):
the list of who asked to be forgotten is not itself a list of their phone numbers.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_jobs.privacy.tokens import TokenKeyError, check_key, token, token_col

TABLE = "ops_suppressions"
KEY_ENV = "CDP_TOKEN_KEY"
# Bronze columns that hold an identifier under another name.
ALIASES = {"member_phone": "phone"}


def token_key(env: dict[str, str] | None = None) -> bytes:
    """The project's token key: $CDP_TOKEN_KEY, else the file $CDP_TOKEN_KEY_FILE names (never committed;
    `cdp token-key` creates one: `make demo` makes .secrets/token.key, which git ignores)."""
    env = os.environ if env is None else env
    if env.get(KEY_ENV):
        return check_key(env[KEY_ENV])
    path = env.get(f"{KEY_ENV}_FILE")
    if path:
        try:
            return check_key(Path(path).read_text().strip(), f"the file {path} ({KEY_ENV}_FILE)")
        except FileNotFoundError:
            raise TokenKeyError(f"{KEY_ENV}_FILE names {path}, which does not exist") from None
    return check_key(None, f"{KEY_ENV} (or {KEY_ENV}_FILE)")


def create_key_file(path: Path) -> bool:
    """A new random token key (32 bytes, hex) in `path`, readable by its owner only; True when created.
    An existing file is kept (a new key would orphan every token made with the old one) and checked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        check_key(path.read_text().strip(), f"the file {path}")
        return False
    import secrets

    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return True


def id_columns(columns: list[str]) -> dict[str, str]:
    """The identifier columns of a bronze record (`column -> id type`)."""
    from spark_jobs.config import ID_TYPES

    return {c: ALIASES.get(c, c) for c in columns if c in ID_TYPES or c in ALIASES}


def record(root: str, target, request_id: str, key: bytes | None = None) -> int:
    """Append a suppression for each of the target's identifiers not suppressed yet; returns how many."""
    import pyarrow as pa

    from spark_jobs.contracts import contract
    from spark_jobs.tables import append_arrow

    key = key or token_key()
    have = load(root)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [{"id_type": t, "token": token(v, key), "request_id": request_id, "erased_at": now}
            for t, v in target.values() if token(v, key) not in have.get(t, set())]
    if rows:
        append_arrow(root, TABLE, pa.Table.from_pylist(rows, schema=contract(TABLE).arrow_schema()))
    return len(rows)


def load(root: str) -> dict[str, set[str]]:
    """id type -> suppressed tokens (empty when nobody was erased)."""
    from spark_jobs.tables import TableNotFoundError, read_pandas

    try:
        df = read_pandas(root, TABLE, columns=["id_type", "token"])
    except TableNotFoundError:
        return {}
    out: dict[str, set[str]] = {}
    for t, tok in zip(df["id_type"], df["token"], strict=True):
        out.setdefault(t, set()).add(tok)
    return out


def _canonical(c: Column, id_type: str) -> Column:
    from spark_jobs.normalise import device_id_col, email_col

    if id_type == "email":
        return email_col(c)
    if id_type == "device_id":
        return device_id_col(c)
    return F.when(F.length(F.trim(c)) > 0, F.trim(c))


def with_suppressed(df: DataFrame, suppressed: dict[str, set[str]], key: bytes | None = None,
                    phone_region: str = "CN") -> DataFrame:
    """Add `_suppressed`: the record carries an identifier of an erased person (its canonical form's token
    is suppressed). Without suppressions it is a constant false and costs nothing."""
    cols = {c: t for c, t in id_columns(df.columns).items() if suppressed.get(t)}
    if not cols:
        return df.withColumn("_suppressed", F.lit(False))
    from spark_jobs.normalise import with_canonical_phones

    key = key or token_key()
    phones = {c: f"__sup_{c}" for c, t in cols.items() if t == "phone"}
    out = with_canonical_phones(df, phones, phone_region) if phones else df
    hit = F.lit(False)
    for c, t in cols.items():
        canonical = F.col(phones[c]) if c in phones else _canonical(F.col(c), t)
        hit = hit | F.coalesce(token_col(canonical, key).isin(sorted(suppressed[t])), F.lit(False))
    return out.withColumn("_suppressed", hit).drop(*phones.values())
