"""Field expressions of conf/sources.yaml (`expr: amount_fen / 100`): the source columns they read and
their Spark SQL over the reader's staged columns; parsed with sqlglot, no I/O."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from spark_jobs.config import ConfigError


def _parse(sql: str, where: str) -> exp.Expression:
    try:
        tree = sqlglot.parse_one(sql, read="spark")
    except sqlglot.errors.ParseError as e:
        raise ConfigError(f"{where}: expr {sql!r} is not valid Spark SQL: {str(e).splitlines()[0]}") from None
    bad = [n for n in tree.walk() if isinstance(n, exp.Select | exp.Subquery | exp.Star | exp.Window | exp.AggFunc)]
    if bad:
        raise ConfigError(f"{where}: expr {sql!r} may only combine the record's own columns (no query, *, window or aggregate)")
    return tree


def _path(col: exp.Column) -> str:
    """The source column (or dotted JSON path) a column reference names."""
    return ".".join(p.name for p in col.parts)


def expression_columns(sql: str, where: str = "expr") -> tuple[str, ...]:
    """The source columns an expression reads, in first-use order."""
    seen: dict[str, None] = {}
    for col in _parse(sql, where).find_all(exp.Column):
        seen.setdefault(_path(col), None)
    return tuple(seen)


def staged_sql(sql: str, staged: dict[str, str]) -> str:
    """The expression in Spark SQL over the staged columns (`staged`: source column -> staged name)."""
    tree = _parse(sql, "expr").transform(
        lambda n: exp.column(staged[_path(n)], quoted=True) if isinstance(n, exp.Column) else n
    )
    return tree.sql(dialect="spark")
