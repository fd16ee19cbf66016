"""Checks that a config regex compiles, with one meaning, on Sail (Rust regex) and JVM Spark (java.util.regex); no I/O."""

from __future__ import annotations

import re
import warnings

import re2
import sqlglot
from sqlglot import exp

_SAIL = "Sail's regex engine (Rust regex)"
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the problem is returned to the caller; RE2 would also print it to stderr

# RE2 says only "invalid perl operator: (?=": what each construct is, and why Sail lacks it.
_PERL_OPERATORS = {
    "(?P": "`(?P=name)` (a backreference) is not supported by {sail}, which has no backreferences",
    "(?=": "lookahead `(?=…)` is not supported by {sail}, which has no lookaround",
    "(?!": "lookahead `(?!…)` is not supported by {sail}, which has no lookaround",
    "(?<=": "lookbehind `(?<=…)` is not supported by {sail}, which has no lookaround",
    "(?<!": "lookbehind `(?<!…)` is not supported by {sail}, which has no lookaround",
    "(?>": "an atomic group `(?>…)` is not supported by {sail}",
    "(?(": "a conditional `(?(…)…)` is not supported by {sail}",
    "(?#": "a comment `(?#…)` is not supported by {sail}",
}
# Escapes RE2 knows and Rust regex does not.
_RE2_ONLY_ESCAPES = {
    r"\C": "`\\C` (any byte) is not supported by {sail}",
    r"\Q": "`\\Q…\\E` (quoted text) is not supported by {sail}; escape each metacharacter instead",
}
# One token of a pattern RE2 accepted: an escape, a character class (RE2 does not nest them), a named
# group's opening, a brace, or any other character.
_TOKEN = re.compile(r"""
    \\(?:[pPx]\{[^}]*\}|.)
  | \[\^?\]?(?:\[:\^?[a-z]+:\]|\\.|[^\]\\])*\]
  | \(\?P?<(?![=!])
  | \{(?:\d+(?:,\d*)?\})?
  | .
""", re.S | re.X)
# In a character class RE2 reads these literally; Rust regex and java.util.regex as a nested class
# (a POSIX `[:alpha:]` too, which Java takes for the characters `:alph`) or a set operation.
_SET_SYNTAX = re.compile(r"\\.|(\[|&&|--|~~)", re.S)
# Python's re stands in for java.util.regex; these two are the same construct spelled otherwise there.
_PYTHON_SPELLING = {r"\z": r"\Z", "(?<": "(?P<"}
# In Rust regex \w, \d and \s cover all of Unicode (RE2's are ASCII), and a compiled regex may take
# at most 10 MiB. Measured on Sail, the first refused patterns take 176 000 (`\d{2047}`) to 250 000
# (`\w{210}`) instructions in RE2's program for the Unicode spelling: refuse from 150 000.
_UNICODE_SPELLING = {r"\w": r"\pL", r"\W": r"\PL", r"\d": r"\p{Nd}", r"\D": r"\P{Nd}", r"\s": r"\p{Z}", r"\S": r"\P{Z}"}
_MAX_PROGRAM = 150_000


def engine_regex_error(pattern: str) -> str | None:
    """None when `pattern` compiles in RE2 (the syntax of Sail's Rust regex) and in Python's re (a
    stand-in for JVM Spark's java.util.regex), else which construct is unsupported and what to write."""
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        return _re2_problem(e.args[0].decode("utf-8", "replace"))
    tokens = _TOKEN.findall(pattern)
    for t in tokens:
        if t.startswith("{") and not t.endswith("}"):
            return "a `{` that does not start a repetition `{n}`, `{n,}` or `{n,m}` is an error on Sail and JVM Spark; write `\\{`"
        if t in _RE2_ONLY_ESCAPES:
            return _RE2_ONLY_ESCAPES[t].format(sail=_SAIL)
        if t.startswith("(?P<"):
            return "`(?P<name>…)` is not supported by JVM Spark's java.util.regex; write `(?<name>…)` or a plain group"
        if t.startswith("[") and _nests(t):
            return (f"`{t}`: Sail and JVM Spark read `[`, `&&`, `--` and `~~` in a character class as a nested "
                    "class (`[:alpha:]` too) or a set operation; escape them with `\\` (`\\[`, `\\&`, `\\-`)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible set operation": ruled on above
            re.compile("".join(_PYTHON_SPELLING.get(t, t) for t in tokens))
    except re.error as e:
        return f"refused by Python's re, which config checks with in place of JVM Spark's java.util.regex: {e}"
    unicode = re.sub(r"\\.", lambda m: _UNICODE_SPELLING.get(m[0], m[0]), pattern, flags=re.S)
    if re2.compile(unicode, _OPTIONS).programsize > _MAX_PROGRAM:
        return (f"too large for {_SAIL}, where `\\w`, `\\d` and `\\s` cover all of Unicode and a compiled "
                "regex may take at most 10 MiB; repeat a smaller class (e.g. `[a-z0-9_]`) or fewer times")
    return None


def _nests(cls: str) -> bool:
    start = len(re.match(r"\[\^?\]?", cls)[0])  # a `]` first in a class is a literal
    return any(m[1] for m in _SET_SYNTAX.finditer(cls, start))


def _re2_problem(message: str) -> str:
    what, _, arg = message.partition(": ")
    if arg == r"\Z":
        return f"`\\Z` is not supported by {_SAIL}; use `$` or `\\z`"
    if what == "invalid escape sequence" and arg[1:2].isdigit():
        return f"`{arg}` (a backreference) is not supported by {_SAIL}, which has no backreferences"
    if what == "invalid escape sequence" and not arg[1:2].isascii():
        return f"`{arg}` escapes a character that is not a regex metacharacter, which {_SAIL} refuses; write `{arg[1:]}`"
    if what == "invalid perl operator" and arg in _PERL_OPERATORS:
        return _PERL_OPERATORS[arg].format(sail=_SAIL)
    if what == "bad repetition operator" and arg.endswith("+"):
        return f"`{arg}` (a possessive quantifier) is not supported by {_SAIL}; drop the last `+`"
    return f"not valid for {_SAIL}: {message}"


# Spark functions whose second argument is a regex.
_REGEX_FUNCTIONS = (exp.RegexpLike, exp.RegexpILike, exp.RegexpReplace, exp.RegexpExtract, exp.RegexpExtractAll,
                    exp.RegexpSplit, exp.RegexpCount, exp.RegexpInstr, exp.RegexpSubstr)


def expression_regex_errors(sql: str) -> list[str]:
    """Problems of the literal regexes in a Spark SQL expression (`rlike`, `regexp_*`, `split`), each
    naming its pattern; [] when there are none or the expression does not parse (its parser says why)."""
    try:
        tree = sqlglot.parse_one(sql, read="spark")
    except sqlglot.errors.ParseError:
        return []
    out = []
    for node in tree.find_all(*_REGEX_FUNCTIONS, exp.Anonymous):
        if isinstance(node, exp.Anonymous):  # regexp(s, pattern): sqlglot has no node of its own for it
            pattern = node.expressions[1] if node.name.lower() == "regexp" and len(node.expressions) == 2 else None
        else:
            pattern = node.expression
        if isinstance(pattern, exp.Literal) and pattern.is_string:
            problem = engine_regex_error(pattern.this)
            if problem:
                out.append(f"regex `{pattern.this}`: {problem}")
    return out
