"""spark_jobs.regexes: a config regex is accepted only if Sail (Rust regex) and JVM Spark both run it; the
checker is held to the real engines."""

import pytest
from pyspark.sql import functions as F

from spark_jobs.config import BlocklistConfig
from spark_jobs.regexes import engine_regex_error, expression_regex_errors

# Python-only (or Java-only) constructs, and what the message must say about them.
UNSUPPORTED = [
    (r"\Z", "use `$` or `\\z`"),
    (r"(?P<x>a)(?P=x)", "backreference"),
    (r"(?=a)", "lookahead"),
    (r"(?<!a)b", "lookbehind"),
    (r"(a)\1", "backreference"),
    (r"(?>a)", "atomic group"),
    (r"a++", "possessive"),
    (r"\¥", "write `¥`"),
]
# Patterns the default config and the pipeline use, and other portable ones.
PORTABLE = [
    *BlocklistConfig().regex["email"], *BlocklistConfig().regex["device_id"],
    r"^-?[0-9]{1,15}$", r"(?i)^n/?a\z", r"\Ax+", r"[^@\s]+@[^@\s]+\.[a-z]{2,}", r"\bfoo\b|\d{3}-\d{4}",
    r"(?<user>[a-z]+)@", r"\@\/\-\.", r"a{2,5}?", r"[]a]", "}", r"\w{100}",
]


@pytest.mark.parametrize(("pattern", "says"), UNSUPPORTED)
def test_engine_regex_error_names_the_construct_sail_lacks(pattern, says):
    problem = engine_regex_error(pattern)
    assert problem is not None and says in problem and "Sail" in problem


@pytest.mark.parametrize("pattern", PORTABLE)
def test_engine_regex_error_accepts_portable_patterns(pattern):
    assert engine_regex_error(pattern) is None


@pytest.mark.parametrize(("pattern", "says"), [
    (r"(?P<x>a)", "(?<name>…)"),           # fine for RE2 and Python, refused by java.util.regex
    (r"a{,3}", "write `\\{`"),             # a literal for RE2 and {0,3} for Python, an error on Sail and Java
    (r"[[:alpha:]]", "nested"),            # a POSIX class on Sail, the characters `:alph` on Java
    (r"[a-z&&[^aeiou]]", "set operation"),
    (r"\Q.\E", "escape each metacharacter"),
    (r"\w{300}", "too large"),             # Unicode \w on Sail: over its 10 MiB compiled limit
])
def test_engine_regex_error_rejects_what_rust_or_java_read_otherwise(pattern, says):
    problem = engine_regex_error(pattern)
    assert problem is not None and says in problem


def test_expression_regex_errors_names_each_bad_literal_pattern():
    sql = r"regexp_replace(phone, '\\Z', '') || split(tags, '(?=,)')[0] || regexp(name, '^a') || rlike(name, pat)"
    problems = expression_regex_errors(sql)
    assert len(problems) == 2
    assert problems[0].startswith(r"regex `\Z`:") and "use `$`" in problems[0]
    assert problems[1].startswith("regex `(?=,)`:") and "lookahead" in problems[1]


def test_expression_regex_errors_accepts_portable_literals_and_ignores_other_sql():
    assert expression_regex_errors(r"regexp_extract(email, '^([^@]+)@', 1)") == []
    assert expression_regex_errors(r"amount_fen / 100") == []
    assert expression_regex_errors("((") == []  # the expression's own parser reports it


def _refusal(spark, pattern: str) -> str | None:
    try:
        spark.range(1).select(F.lit("x").rlike(pattern)).collect()
    except Exception as e:  # the engine's own error type: Spark Connect's on Sail, Py4J's on the JVM
        return str(e).strip().splitlines()[0]
    return None


def test_engine_regex_error_agrees_with_the_engine(spark):
    patterns = [*PORTABLE, *(p for p, _ in UNSUPPORTED), r"(?P<x>a)", r"a{,3}", "{", r"[a[b]", r"\C", r"\w{300}"]
    refused = {p: why for p in patterns if (why := _refusal(spark, p))}
    accepted = [p for p in patterns if engine_regex_error(p) is None]
    assert refused, "the list must hold patterns this engine refuses, or it proves nothing"
    assert not {p: refused[p] for p in accepted if p in refused}, "accepted by the checker, refused by the engine"
    assert all(engine_regex_error(p) for p in refused)
