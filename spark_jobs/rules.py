"""The rule language of tags and segments: a small, typed subset of Spark SQL expressions, parsed with
sqlglot and checked when config loads (unknown names, type mismatches, unsupported syntax); reads and
writes nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

# Value types of tags and rule results, as contract column types.
TYPES = ("long", "double", "string", "boolean", "date")
_NUMERIC = {"long", "double"}
_NULL = "null"  # the type of NULL: fits anywhere


class RuleError(ValueError):
    """A rule expression cannot be parsed, names something unknown, or mixes types."""


@dataclass(frozen=True)
class Function:
    """A function a rule may call: checks its literal arguments and gives the result type."""

    result: str
    check_args: Callable[[list[exp.Expression]], None]


@dataclass(frozen=True)
class Rule:
    text: str
    tree: exp.Expression

    def names(self) -> set[str]:
        """The tag names the rule reads."""
        return {c.name for c in self.tree.find_all(exp.Column)}

    def calls(self) -> list[exp.Expression]:
        return list(self.tree.find_all(exp.Anonymous))

    def sql(self, rename_calls: Mapping[str, str] | None = None) -> str:
        """The rule as Spark SQL; function calls replaced by the column names `rename_calls` gives
        (keyed by each call's canonical SQL text)."""
        rename_calls = rename_calls or {}

        def swap(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Anonymous) and call_key(node) in rename_calls:
                return exp.column(rename_calls[call_key(node)], quoted=True)
            return node

        return self.tree.copy().transform(swap).sql(dialect="spark")


def call_key(node: exp.Expression) -> str:
    return node.sql(dialect="spark").lower()


def parse(text: str) -> Rule:
    """Parse one rule expression."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError("the rule is empty")
    try:
        tree = sqlglot.parse_one(text, read="spark")
    except sqlglot.errors.ParseError as e:
        first = e.errors[0]["description"] if e.errors else str(e)
        raise RuleError(f"cannot parse {text!r}: {first}") from None
    if isinstance(tree, exp.Query | exp.Command) or tree.find(exp.Select):
        raise RuleError(f"{text!r} is not an expression")
    return Rule(text, tree)


def _family(t: str) -> str:
    return "number" if t in _NUMERIC else t


def _unify(types: list[str], what: str) -> str:
    known = [t for t in types if t != _NULL]
    if not known:
        return _NULL
    if {_family(t) for t in known} != {_family(known[0])}:
        raise RuleError(f"{what} mixes types {sorted(set(known))}")
    if _family(known[0]) == "number":
        return "double" if "double" in known else "long"
    return known[0]


def _comparable(a: str, b: str, node: exp.Expression) -> None:
    if _NULL in (a, b):
        return
    if _family(a) == _family(b):
        return
    if {a, b} == {"date", "string"}:  # date = '2026-11-01' is how people write date literals
        return
    raise RuleError(f"type mismatch in `{node.sql(dialect='spark')}`: {a} compared with {b}")


def _need(t: str, want: set[str], node: exp.Expression, role: str) -> None:
    if t != _NULL and t not in want:
        raise RuleError(f"`{node.sql(dialect='spark')}`: {role} must be {' or '.join(sorted(want))}, got {t}")


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)


def infer(rule: Rule, types: Mapping[str, str], functions: Mapping[str, Function] | None = None) -> str:
    """The rule's result type given the tags' types; raises RuleError naming the first problem."""
    functions = functions or {}

    def walk(node: exp.Expression) -> str:
        if isinstance(node, exp.Paren):
            return walk(node.this)
        if isinstance(node, exp.Column):
            if node.table:
                raise RuleError(f"`{node.sql()}`: refer to tags by their bare name")
            if node.name not in types:
                raise RuleError(f"unknown tag {node.name!r}")
            return types[node.name]
        if isinstance(node, exp.Null):
            return _NULL
        if isinstance(node, exp.Boolean):
            return "boolean"
        if isinstance(node, exp.Literal):
            if node.is_string:
                return "string"
            return "long" if node.this.lstrip("-").isdigit() else "double"
        if isinstance(node, exp.Neg):
            t = walk(node.this)
            _need(t, _NUMERIC, node, "the operand")
            return t
        if isinstance(node, exp.And | exp.Or):
            for side in (node.this, node.expression):
                _need(walk(side), {"boolean"}, node, "each side of AND/OR")
            return "boolean"
        if isinstance(node, exp.Not):
            _need(walk(node.this), {"boolean"}, node, "the operand of NOT")
            return "boolean"
        if isinstance(node, _COMPARISONS):
            _comparable(walk(node.this), walk(node.expression), node)
            return "boolean"
        if isinstance(node, exp.Is):
            walk(node.this)
            if not isinstance(node.expression, exp.Null):
                raise RuleError(f"`{node.sql(dialect='spark')}`: only IS NULL / IS NOT NULL are supported")
            return "boolean"
        if isinstance(node, exp.In):
            left = walk(node.this)
            if node.args.get("query") or not node.expressions:
                raise RuleError(f"`{node.sql(dialect='spark')}`: IN needs a list of values")
            for v in node.expressions:
                _comparable(left, walk(v), node)
            return "boolean"
        if isinstance(node, exp.Between):
            left = walk(node.this)
            for bound in (node.args["low"], node.args["high"]):
                _comparable(left, walk(bound), node)
            return "boolean"
        if isinstance(node, _ARITHMETIC):
            sides = [walk(node.this), walk(node.expression)]
            for t in sides:
                _need(t, _NUMERIC, node, "arithmetic operands")
            return "double" if isinstance(node, exp.Div) else _unify(sides, f"`{node.sql(dialect='spark')}`")
        if isinstance(node, exp.Case):
            if node.this is not None:
                raise RuleError(f"`{node.sql(dialect='spark')}`: write CASE WHEN <condition> THEN ..., not CASE <value> WHEN")
            results = []
            for branch in node.args.get("ifs") or []:
                _need(walk(branch.this), {"boolean"}, branch, "a WHEN condition")
                results.append(walk(branch.args["true"]))
            if node.args.get("default") is not None:
                results.append(walk(node.args["default"]))
            return _unify(results, f"`{node.sql(dialect='spark')}`: its THEN/ELSE values")
        if isinstance(node, exp.If):
            _need(walk(node.this), {"boolean"}, node, "the IF condition")
            branches = [node.args["true"]] + ([node.args["false"]] if node.args.get("false") is not None else [])
            return _unify([walk(b) for b in branches], f"`{node.sql(dialect='spark')}`")
        if isinstance(node, exp.Coalesce):
            return _unify([walk(node.this), *(walk(e) for e in node.expressions)], f"`{node.sql(dialect='spark')}`")
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            if name not in functions:
                known = f"; functions here: {sorted(functions)}" if functions else ""
                raise RuleError(f"unknown function {node.name!r}{known}")
            functions[name].check_args(list(node.expressions))
            return functions[name].result
        raise RuleError(f"`{node.sql(dialect='spark')}` is not supported in rules (use comparisons, AND/OR/NOT, IN, "
                        "BETWEEN, IS NULL, arithmetic, CASE WHEN, IF, COALESCE)")

    return walk(rule.tree)
