"""Why an identifier belongs to its person: reads gold_id_map, silver_id_links, silver_identifiers, gold_id_dropped
(and gold_id_decisions when it exists) through delta-rs, no Spark; writes nothing but an optional SVG drawing."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# spark_jobs.standardise.STRENGTHS, weakest first (copied: importing standardise would load Spark's
# column machinery into a look-up; a test keeps the two equal).
STRENGTHS = ("contact", "binding", "verified")
_RANK = {s: i for i, s in enumerate(STRENGTHS)}
UNKNOWN = "?"  # a column the tables do not have yet (strength, valid_from / valid_to)

Node = tuple[str, str]  # (id_type, id_value)


class ExplainError(ValueError):
    """An explanation or drawing cannot be made (the message says what to fix)."""


def label(node: Node) -> str:
    """`type:value`, as the CLI prints and the drawing labels an identifier."""
    return f"{node[0]}:{node[1]}"


# --- pure functions over pandas frames ---------------------------------------------------------------


def holders(rows: pd.DataFrame, on: dt.date | None = None, tz: str = "UTC") -> pd.DataFrame:
    """The gold_id_map rows of one identifier that answer "whose is it", earliest owner first: on date
    `on` (a day in time zone `tz`), the rows whose window overlaps that day (valid_from, NULL: since
    first seen; valid_to, NULL: still); without `on`, the open row (the current owner), else the
    latest starting. Without window columns an identifier has one row: that row."""
    if rows.empty or "valid_from" not in rows.columns or "valid_to" not in rows.columns:
        return rows.iloc[:1]
    start = pd.to_datetime(rows["valid_from"], utc=True)  # naive timestamps are UTC
    if "first_seen" in rows.columns:
        start = start.fillna(pd.to_datetime(rows["first_seen"], utc=True))
    end = pd.to_datetime(rows["valid_to"], utc=True)
    if on is None:
        fits = end.isna()
        if not fits.any():
            fits = start == start.max()
    else:
        day = pd.Timestamp(on).tz_localize(tz)
        fits = (start.isna() | (start < day + pd.Timedelta(days=1))) & (end.isna() | (end > day))
    order = pd.DataFrame({"start": start.fillna(pd.Timestamp.min.tz_localize("UTC")), "person": rows["person_id"]})
    return rows.loc[order[fits].sort_values(["start", "person"]).index]


def owner_row(rows: pd.DataFrame, on: dt.date | None = None, tz: str = "UTC") -> pd.Series | None:
    """The owner's row among `holders`: the latest starting (on a day it changed hands, the owner at
    the end of the day); None if nobody held it."""
    held = holders(rows, on, tz)
    return None if held.empty else held.iloc[-1]


def person_pairs(links: pd.DataFrame, members: set[Node], dropped: pd.DataFrame) -> pd.DataFrame:
    """The links among `members` (silver_id_links rows), one row per unordered pair: a_type, a_value,
    b_type, b_value (a < b), records (summed), first_seen (earliest), strength (the strongest seen, "?"
    without the column), sources (sorted, comma-joined), the evidence row shown for the pair (source,
    link_id: the strongest, then earliest), and `kept`: False when gold_id_dropped cut the pair."""
    cols = ["a_type", "a_value", "b_type", "b_value", "records", "first_seen", "strength", "sources", "source",
            "link_id", "kept"]
    if links.empty:
        return pd.DataFrame(columns=cols)
    ends = [sorted((s, d)) for s, d in zip(zip(links["src_type"], links["src_value"], strict=True),
                                            zip(links["dst_type"], links["dst_value"], strict=True), strict=True)]
    inside = [a in members and b in members and a != b for a, b in ends]
    ev = links[inside].copy()
    if ev.empty:
        return pd.DataFrame(columns=cols)
    ends = [e for e, i in zip(ends, inside, strict=True) if i]
    ev["a_type"], ev["a_value"] = [a[0] for a, _ in ends], [a[1] for a, _ in ends]
    ev["b_type"], ev["b_value"] = [b[0] for _, b in ends], [b[1] for _, b in ends]
    ev["strength"] = ev["strength"].fillna(UNKNOWN) if "strength" in ev.columns else UNKNOWN
    ev["_rank"] = ev["strength"].map(_RANK).fillna(-1)
    key = ["a_type", "a_value", "b_type", "b_value"]
    best = ev.sort_values(["_rank", "first_seen", "source", "link_id"], ascending=[False, True, True, True])
    shown = best.drop_duplicates(key)[[*key, "strength", "source", "link_id"]]
    totals = ev.groupby(key, as_index=False).agg(
        records=("records", "sum"), first_seen=("first_seen", "min"),
        sources=("source", lambda s: ",".join(sorted(set(s)))),
    )
    pairs = totals.merge(shown, on=key)
    cut = _cut_pairs(dropped)
    pairs["kept"] = [((r.a_type, r.a_value), (r.b_type, r.b_value)) not in cut for r in pairs.itertuples()]
    return pairs[cols].sort_values(key, ignore_index=True)


def _cut_pairs(dropped: pd.DataFrame) -> set[tuple[Node, Node]]:
    """Every link gold_id_dropped cut (rows with another end), as sorted node pairs."""
    if dropped.empty:
        return set()
    rows = dropped[dropped["other_type"].notna()]
    return {tuple(sorted(((r.id_type, r.id_value), (r.other_type, r.other_value)))) for r in rows.itertuples()}


def shortest_paths(pairs: pd.DataFrame, start: Node, members: set[Node] | None = None) -> dict[Node, list[Node] | None]:
    """The shortest path over the kept pairs (person_pairs) from `start` to every member (or every
    node of the pairs), fewest hops first and, between paths of as many hops, the one over stronger
    evidence; None for a member no kept link reaches."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_node(start)
    kept = pairs[pairs["kept"].astype(bool)] if not pairs.empty else pairs
    for r in kept.sort_values(["a_type", "a_value", "b_type", "b_value"]).itertuples():
        # One hop costs 1; weaker evidence adds a little, never enough to outweigh a hop.
        weak = len(STRENGTHS) - _RANK.get(r.strength, -1)
        graph.add_edge((r.a_type, r.a_value), (r.b_type, r.b_value), weight=1 + weak * 1e-3)
    paths = nx.single_source_dijkstra_path(graph, start, weight="weight")
    targets = members if members is not None else set(graph.nodes)
    return {n: paths.get(n) for n in sorted(targets) if n != start}


def touching(frame: pd.DataFrame, members: set[Node]) -> pd.DataFrame:
    """Rows of an audit table (gold_id_dropped, gold_id_decisions) whose identifier or other end is a member."""
    if frame.empty:
        return frame
    mine = [(t, v) in members or (ot, ov) in members
            for t, v, ot, ov in zip(frame["id_type"], frame["id_value"], frame["other_type"], frame["other_value"],
                                    strict=True)]
    return frame[mine].sort_values(["rule" if "rule" in frame.columns else "decision", "id_type", "id_value"],
                                   ignore_index=True)


@dataclass(frozen=True)
class Explanation:
    """Everything `cdp whois --explain` prints and `--graph` draws, for one identifier's person."""

    identifier: Node
    person_id: str
    as_of: str
    members: list[Node]
    pairs: pd.DataFrame          # person_pairs, plus record_ref
    paths: dict[Node, list[Node] | None]
    cut: pd.DataFrame            # gold_id_dropped rows touching a member
    decisions: pd.DataFrame | None  # gold_id_decisions rows touching a member; None: no such table


def explain_person(identifier: Node, person_id: str, as_of: str, members: set[Node], links: pd.DataFrame,
                   identifiers: pd.DataFrame, dropped: pd.DataFrame,
                   decisions: pd.DataFrame | None = None) -> Explanation:
    """The explanation from the tables' rows (already narrowed to the person, see explain): the pairs
    with one record_ref each (silver_identifiers of the evidence's link_id and source), the paths, the cut."""
    pairs = person_pairs(links, members, dropped)
    refs = {}
    if not identifiers.empty:
        for r in identifiers.sort_values("record_ref").itertuples():
            refs.setdefault((r.link_id, r.source), r.record_ref)
    pairs = pairs.assign(record_ref=[refs.get((lid, s), UNKNOWN) for lid, s in zip(pairs["link_id"], pairs["source"],
                                                                                       strict=True)])
    return Explanation(
        identifier=identifier, person_id=person_id, as_of=as_of, members=sorted(members),
        pairs=pairs, paths=shortest_paths(pairs, identifier, members), cut=touching(dropped, members),
        decisions=None if decisions is None else touching(decisions, members),
    )


def _day(ts) -> str:
    return UNKNOWN if ts is None or pd.isna(ts) else pd.Timestamp(ts).date().isoformat()


def render(e: Explanation, name: Callable[[Node], str] = label) -> list[str]:
    """The explanation as lines of text: the kept links, a path to every identifier (each hop with its
    source, one record, first seen day and strength), then what the rules cut and the tie-break decisions."""
    by_pair = {((r.a_type, r.a_value), (r.b_type, r.b_value)): r for r in e.pairs.itertuples()}
    kept = e.pairs[e.pairs["kept"].astype(bool)] if not e.pairs.empty else e.pairs
    lines = [f"why: {len(kept)} link(s) among the person's {len(e.members)} identifiers "
             f"(silver_id_links up to {e.as_of}, minus what gold_id_dropped cut)"]
    lines.append(f"paths from {name(e.identifier)}:")
    if not e.paths:
        lines.append("  (the person has no other identifier)")
    for target, path in e.paths.items():
        if path is None:
            lines.append(f"  {name(target)}: no kept link reaches it")
            continue
        lines.append(f"  {name(target)} ({len(path) - 1} hop{'s' if len(path) > 2 else ''}):")
        for a, b in zip(path, path[1:], strict=False):
            r = by_pair[tuple(sorted((a, b)))]
            lines.append(f"    {name(a)} -> {name(b)}  via {r.source}  record {r.record_ref}  "
                         f"first seen {_day(r.first_seen)}  strength {r.strength}  records {r.records}"
                         + (f"  sources {r.sources}" if r.sources != r.source else ""))
    lines.append(f"cut (gold_id_dropped as of {e.as_of}):")
    lines += [f"  {line}" for line in cut_lines(e.cut, name)] or ["  nothing"]
    if e.decisions is None:
        lines.append("decisions: skipped (no gold_id_decisions table)")
    else:
        lines.append(f"decisions (gold_id_decisions as of {e.as_of}):")
        lines += [f"  {line}" for line in _decision_lines(e.decisions, name)] or ["  none"]
    return lines


def cut_lines(cut: pd.DataFrame, name: Callable[[Node], str] = label) -> list[str]:
    """One line per gold_id_dropped row: the identifier, the other end of a cut link, the rule, the detail."""
    out = []
    for r in cut.itertuples():
        what = name((r.id_type, r.id_value))
        if isinstance(r.other_type, str):
            what += f" -- {name((r.other_type, r.other_value))}"
        out.append(f"{what}  rule {r.rule}" + (f"  ({r.detail})" if isinstance(r.detail, str) and r.detail else ""))
    return out


def _decision_lines(decisions: pd.DataFrame, name: Callable[[Node], str] = label) -> list[str]:
    out = []
    for r in decisions.itertuples():
        line = (f"{name((r.id_type, r.id_value))} -- {name((r.other_type, r.other_value))}  {r.decision}  "
                f"weight {_number(r.match_weight, 2)}  probability {_number(r.match_probability, 3)}")
        try:
            comparisons = json.loads(r.comparisons) if isinstance(r.comparisons, str) else None
        except ValueError:
            comparisons = None
        if isinstance(comparisons, dict):
            line += "  " + ", ".join(f"{k}={v}" for k, v in sorted(comparisons.items()))
        elif isinstance(r.comparisons, str):
            line += f"  {r.comparisons}"
        reason = getattr(r, "reason", None)
        if isinstance(reason, str) and reason:
            line += f"  (candidate: {reason})"
        out.append(line)
    return out


def _number(x, digits: int) -> str:
    return UNKNOWN if x is None or pd.isna(x) else f"{x:.{digits}f}"


def draw(e: Explanation, out: str | Path, name: Callable[[Node], str] = label) -> Path:
    """Draw the person's identity graph as SVG: identifiers labelled `type:value`, kept links solid
    (SVG group `kept_links`, one path per link), cut links dashed red (group `cut_links`) to their
    other end, which may lie outside the person (drawn grey)."""
    import matplotlib
    import networkx as nx
    from matplotlib.figure import Figure

    out = Path(out)
    if out.suffix.lower() != ".svg":
        raise ExplainError(f"the graph is written as SVG: name an .svg file, got {out}")
    if not out.parent.is_dir():
        raise ExplainError(f"folder {out.parent} does not exist: create it or write the graph elsewhere")
    kept = [((r.a_type, r.a_value), (r.b_type, r.b_value)) for r in e.pairs.itertuples() if r.kept]
    cut = sorted({tuple(sorted(((r.id_type, r.id_value), (r.other_type, r.other_value))))
                  for r in e.cut.itertuples() if isinstance(r.other_type, str)})
    graph = nx.Graph()
    graph.add_nodes_from(e.members)
    graph.add_edges_from(kept)
    graph.add_edges_from(cut)
    pos = nx.spring_layout(graph, seed=7)
    size = max(6.0, min(20.0, 2.0 + 0.8 * graph.number_of_nodes()))
    fig = Figure(figsize=(size, size * 0.75))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(f"person {e.person_id} as of {e.as_of}: {len(kept)} kept, {len(cut)} cut link(s)")
    mine = set(e.members)
    if kept:
        nx.draw_networkx_edges(graph, pos, edgelist=kept, ax=ax, width=1.8, edge_color="#333333").set_gid("kept_links")
    if cut:
        nx.draw_networkx_edges(graph, pos, edgelist=cut, ax=ax, width=1.4, edge_color="#d62728",
                               style="dashed").set_gid("cut_links")
    for nodes, colour, gid in (([n for n in graph if n in mine], "#9ecae1", "identifiers"),
                               ([n for n in graph if n not in mine], "#d9d9d9", "outside")):
        if nodes:
            nx.draw_networkx_nodes(graph, pos, nodelist=nodes, ax=ax, node_color=colour, edgecolors=[
                "#08519c" if n == e.identifier else "#636363" for n in nodes],
                linewidths=[3.0 if n == e.identifier else 1.0 for n in nodes]).set_gid(gid)
    nx.draw_networkx_labels(graph, pos, labels={n: name(n) for n in graph}, ax=ax, font_size=8, clip_on=False)
    ax.margins(0.2)  # room for the labels of the outermost identifiers
    ax.text(0.0, -0.02, "solid: kept link   dashed red: cut by a rule   grey: not this person   "
            f"thick outline: {name(e.identifier)}", transform=ax.transAxes, fontsize=7, va="top")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "cdp"}):  # labels stay searchable text
        fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    return out


# --- thin readers ------------------------------------------------------------------------------------


def table_columns(root: str, name: str) -> list[str] | None:
    """The columns a table has now (its Delta schema), or None when it is not a table (yet)."""
    from deltalake import DeltaTable

    from spark_jobs.contracts import CONTRACTS
    from spark_jobs.tables import table_path

    if name not in CONTRACTS:
        return None
    path = table_path(root, name)
    if not DeltaTable.is_deltatable(path):
        return None
    return [f.name for f in DeltaTable(path).schema().fields]


def _present(root: str, name: str, wanted: list[str], optional: tuple[str, ...] = ()) -> list[str]:
    have = table_columns(root, name) or []
    return [*wanted, *(c for c in optional if c in have)]


def map_rows(root: str, as_of: str, where) -> pd.DataFrame:
    """gold_id_map rows of snapshot `as_of` matching a pyarrow expression, with valid_from / valid_to
    when the table has them."""
    from spark_jobs.tables import read_pandas

    cols = _present(root, "gold_id_map", ["id_type", "id_value", "person_id", "first_seen", "last_seen"],
                    ("valid_from", "valid_to"))
    return read_pandas(root, "gold_id_map", cols, {"as_of": as_of}, where)


def dropped_rows(root: str, as_of: str, nodes: set[Node]) -> pd.DataFrame:
    """gold_id_dropped rows of snapshot `as_of` touching any of `nodes`."""
    import pyarrow.compute as pc

    from spark_jobs.tables import read_pandas

    values = sorted({v for _, v in nodes})
    where = pc.field("id_value").isin(values) | pc.field("other_value").isin(values)
    rows = read_pandas(root, "gold_id_dropped", ["id_type", "id_value", "other_type", "other_value", "rule", "detail"],
                       {"as_of": as_of}, where)
    return touching(rows, nodes)


def explain(root: str, identifier: Node, person_id: str, as_of: str) -> Explanation:
    """Read what explains `identifier`'s membership of `person_id` in snapshot `as_of` (the person's
    gold_id_map rows; silver links and identifier sets up to `as_of`; the snapshot's gold_id_dropped
    and, when the table exists, gold_id_decisions) and build the Explanation. Raises
    TableNotFoundError when a table it needs does not exist."""
    import pyarrow.compute as pc

    from spark_jobs.tables import read_pandas

    rows = map_rows(root, as_of, pc.field("person_id") == person_id)
    members = set(zip(rows["id_type"], rows["id_value"], strict=True)) | {identifier}
    values = sorted({v for _, v in members})
    upto = pc.field("_batch_date") <= pc.scalar(dt.date.fromisoformat(as_of))
    link_cols = _present(root, "silver_id_links", ["link_id", "src_type", "src_value", "dst_type", "dst_value", "source",
                                                   "records", "first_seen"], ("strength",))
    links = read_pandas(root, "silver_id_links", link_cols, where=upto & pc.field("src_value").isin(values)
                        & pc.field("dst_value").isin(values))
    link_ids = sorted(set(links["link_id"]))
    identifiers = read_pandas(root, "silver_identifiers", ["link_id", "source", "record_ref"],
                              where=upto & pc.field("link_id").isin(link_ids)) if link_ids else pd.DataFrame(
        columns=["link_id", "source", "record_ref"])
    decisions = None
    if table_columns(root, "gold_id_decisions") is not None:
        where = pc.field("id_value").isin(values) | pc.field("other_value").isin(values)
        cols = _present(root, "gold_id_decisions", ["id_type", "id_value", "other_type", "other_value", "match_weight",
                                                    "match_probability", "decision", "comparisons"], ("reason",))
        decisions = read_pandas(root, "gold_id_decisions", cols, {"as_of": as_of}, where)
    return explain_person(identifier, person_id, as_of, members, links, identifiers,
                          dropped_rows(root, as_of, members), decisions)
