"""A byte-level search for personal identifiers in files: what an auditor runs over a store the pipeline
wrote (the MLflow store and artifacts, Airflow's task logs, a lakehouse). Independent of the code under
test: the identifiers come from a world's gold_id_map and are searched for in the forms a person would
grep for; Parquet files are also searched value by value (their pages are compressed)."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable
from pathlib import Path


def identifier_forms(rows: Iterable[tuple[str, str]], min_length: int = 6) -> re.Pattern[bytes]:
    """One pattern for every (id_type, id_value): the stored value, and a phone's national number too
    (+8613912345678 is also written 13912345678), each not inside a longer word or number. Every type of
    spark_jobs.config.ID_TYPES is a direct identifier (spark_jobs/privacy/classes.py); person_id, the
    CDP's own pseudonym, is skipped."""
    forms = set()
    for id_type, value in rows:
        if not value or id_type == "person_id" or len(value) < min_length:
            continue
        forms.add(value)
        if id_type == "phone" and value.startswith("+86"):
            forms.add(value.removeprefix("+86"))
    if not forms:
        raise ValueError("no identifiers to search for")
    alternation = b"|".join(re.escape(f.encode()) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rb"(?<![A-Za-z0-9_])(?:" + alternation + rb")(?![A-Za-z0-9_])", re.IGNORECASE)


def world_identifiers(lakehouse: str) -> re.Pattern[bytes]:
    """Every personal identifier One-ID resolved in the lakehouse (all as-of dates)."""
    from spark_jobs.tables import read_pandas

    ids = read_pandas(lakehouse, "gold_id_map", ["id_type", "id_value"]).drop_duplicates()
    return identifier_forms(ids.itertuples(index=False, name=None))


def _texts(path: Path) -> list[bytes]:
    data = path.read_bytes()
    texts = [data]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False).encode())
    elif path.suffix == ".gz":
        texts.append(gzip.decompress(data))
    return texts


def hits(folders: Iterable[Path], pattern: re.Pattern[bytes]) -> list[str]:
    """`file ~ the matched text` for every file under `folders` (or a file itself) that holds a form of an identifier."""
    out = []
    for base in map(Path, folders):
        for path in [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()):
            for text in _texts(path):
                m = pattern.search(text)
                if m:
                    out.append(f"{path} ~ {m.group(0).decode(errors='replace')!r}")
                    break
    return out


def files_under(folders: Iterable[Path]) -> int:
    return sum(1 if Path(b).is_file() else sum(p.is_file() for p in Path(b).rglob("*")) for b in folders)
