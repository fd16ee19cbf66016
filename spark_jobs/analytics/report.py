"""The run report: reads ops_dq_results, bronze_quarantine, gold_id_changes, gold_segment_members, the
analysis marts and ops_alerts through delta-rs (no Spark session), and writes one self-contained HTML
page (plotly.js inlined, works offline) to <lakehouse>/_runs/<run>/report.html."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

import pandas as pd

from spark_jobs.analytics.config import TOTAL
from spark_jobs.config import CdpConfig
from spark_jobs.tables import TableNotFoundError, latest_partition, read_pandas

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans SC",sans-serif;margin:0;background:#f6f7f9;color:#1f2328}
header{background:#24292f;color:#fff;padding:16px 28px}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;opacity:.8}
main{padding:8px 28px 40px}section{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:18px 0;padding:12px 18px}
h2{font-size:17px;margin:6px 0 10px}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
.chart{min-height:360px}.empty{color:#6e7781;font-style:italic}table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}th{background:#f6f8fa}.critical{color:#cf222e;font-weight:600}
.warning{color:#9a6700;font-weight:600}nav a{color:#fff;margin-right:14px;font-size:13px}
"""


def _read(root: str, table: str, columns=None, where=None) -> pd.DataFrame:
    try:
        return read_pandas(root, table, columns, where=where)
    except TableNotFoundError:
        return pd.DataFrame(columns=columns or [])


def _since(column: str, first: dt.date):
    import pyarrow.compute as pc

    return pc.field(column) >= pc.scalar(first)


class _Page:
    """Charts (plotly figures) and HTML blocks in sections, rendered into one page."""

    def __init__(self):
        self.sections: list[tuple[str, str, list[str]]] = []
        self.charts: list[str] = []

    def section(self, key: str, title: str) -> list[str]:
        parts: list[str] = []
        self.sections.append((key, title, parts))
        return parts

    def chart(self, parts: list[str], key: str, fig) -> None:
        fig.update_layout(margin={"l": 50, "r": 20, "t": 50, "b": 40}, height=360, template="plotly_white",
                          legend={"orientation": "h", "y": -0.2}, title_font_size=14)
        if key.startswith(("metric_", "rows_", "quarantine", "identity", "segment_sizes")):
            days = [pd.Timestamp(x) for t in fig.data for x in (t.x if t.x is not None else ())]
            span = (max(days) - min(days)).days + 1 if days else 1
            # Days, never hours: one tick per day, or per few days over a longer span.
            fig.update_xaxes(type="date", tickformat="%b %d", dtick=86_400_000 * max(1, -(-span // 12)))
        self.charts.append(key)
        parts.append(f'<div class="chart" data-chart="{key}">'
                     + fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{key}",
                                   config={"displaylogo": False, "responsive": True}) + "</div>")

    @staticmethod
    def empty(parts: list[str], text: str) -> None:
        parts.append(f'<p class="empty">{html.escape(text)}</p>')

    def render(self, title: str, subtitle: str) -> str:
        from plotly.offline import get_plotlyjs

        nav = "".join(f'<a href="#{k}">{html.escape(t)}</a>' for k, t, _ in self.sections)
        body = "".join(f'<section id="{k}"><h2>{html.escape(t)}</h2><div class="grid">{"".join(p)}</div></section>'
                       for k, t, p in self.sections)
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
                f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p><nav>{nav}</nav></header>"
                f'<main>{body}</main><script>window.CDP_CHARTS={json.dumps(self.charts)};</script></body></html>')


def _cell(v) -> str:
    return f"{v:,.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[dict], columns: list[str], classes: dict[str, str] | None = None) -> str:
    """An HTML table across the whole section (`classes`: column -> the column whose value is its CSS class)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{html.escape(str(r.get(classes.get(c, ""), "")) if classes and c in classes else "")}">'
                         f"{html.escape(_cell(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f'<div style="grid-column:1/-1"><table><tr>{head}</tr>{body}</table></div>'



def _rows_per_table(page: _Page, root: str, first: dt.date) -> None:
    import plotly.graph_objects as go

    parts = page.section("rows", "Rows per table over the days")
    dq = _read(root, "ops_dq_results", ["batch_date", "table_name", "scope", "expectation", "observed_value", "checked_at"],
               _since("batch_date", first))
    dq = dq[dq["expectation"] == "row_count"]
    if dq.empty:
        return page.empty(parts, "no gated writes recorded yet (ops_dq_results)")
    dq = dq.sort_values("checked_at").drop_duplicates(["batch_date", "table_name", "scope"], keep="last")
    dq["rows"] = dq["observed_value"].astype(float)
    per = dq.groupby(["table_name", "batch_date"], as_index=False)["rows"].sum()
    fig = go.Figure([go.Scatter(x=g["batch_date"], y=g["rows"], mode="lines+markers", name=t)
                     for t, g in per.groupby("table_name")])
    fig.update_layout(title="rows written per batch (gated writes)", yaxis_type="log")
    page.chart(parts, "rows_per_table", fig)


def _quarantine(page: _Page, root: str, first: dt.date) -> None:
    import plotly.graph_objects as go

    parts = page.section("quarantine", "Quarantine by reason")
    q = _read(root, "bronze_quarantine", ["_batch_date", "reason"], _since("_batch_date", first))
    if q.empty:
        return page.empty(parts, "no record quarantined in these days")
    q["reason"] = q["reason"].str.slice(0, 60)
    per = q.groupby(["reason", "_batch_date"]).size().rename("rows").reset_index()
    fig = go.Figure([go.Bar(x=g["_batch_date"], y=g["rows"], name=r) for r, g in per.groupby("reason")])
    fig.update_layout(title="quarantined records per batch and reason", barmode="stack")
    page.chart(parts, "quarantine", fig)


def _identity(page: _Page, root: str, first: dt.date) -> None:
    import plotly.graph_objects as go

    parts = page.section("identity", "Identity: new people, merges and splits")
    ch = _read(root, "gold_id_changes", ["as_of", "change"], _since("as_of", first))
    if ch.empty:
        return page.empty(parts, "no identity changes yet")
    per = ch.groupby(["change", "as_of"]).size().rename("n").reset_index()
    fig = go.Figure([go.Bar(x=g["as_of"], y=g["n"], name=c) for c, g in per.groupby("change")])
    fig.update_layout(title="gold_id_changes per batch", barmode="group", yaxis_type="log")
    page.chart(parts, "identity", fig)


def _segments(page: _Page, root: str, first: dt.date) -> None:
    import plotly.graph_objects as go

    parts = page.section("segments", "Segment sizes, entered and left")
    m = _read(root, "gold_segment_members", ["as_of", "segment", "status"], _since("as_of", first))
    if m.empty:
        return page.empty(parts, "no segment members yet")
    per = m.groupby(["segment", "as_of", "status"]).size().unstack("status", fill_value=0).reset_index()
    for s in ("entered", "stayed", "left"):
        per[s] = per[s] if s in per else 0
    per["members"] = per["entered"] + per["stayed"]
    sizes = go.Figure([go.Scatter(x=g["as_of"], y=g["members"], mode="lines+markers", name=s) for s, g in per.groupby("segment")])
    sizes.update_layout(title="members per segment")
    page.chart(parts, "segment_sizes", sizes)
    last = per[per["as_of"] == per["as_of"].max()]
    flow = go.Figure([go.Bar(x=last["segment"], y=last["entered"], name="entered"),
                      go.Bar(x=last["segment"], y=-last["left"], name="left")])
    flow.update_layout(title=f"entered and left on {last['as_of'].max()}", barmode="relative")
    page.chart(parts, "segment_flow", flow)


def _quality(page: _Page, root: str, run_id: str, summary: dict) -> None:
    import plotly.graph_objects as go
    import pyarrow.compute as pc

    parts = page.section("quality", "Quality results of this run")
    dq = _read(root, "ops_dq_results", ["table_name", "expectation", "level", "success", "observed_value", "unexpected_count"],
               pc.field("run_id") == run_id)
    if dq.empty:
        return page.empty(parts, "no validation recorded for this run")
    per = dq.groupby("table_name")["success"].agg(passed="sum", checked="count").reset_index()
    per["failed"] = per["checked"] - per["passed"]
    fig = go.Figure([go.Bar(y=per["table_name"], x=per["passed"], name="passed", orientation="h", marker_color="#2da44e"),
                     go.Bar(y=per["table_name"], x=per["failed"], name="failed", orientation="h", marker_color="#cf222e")])
    fig.update_layout(title="expectations per table", barmode="stack", height=max(360, 22 * len(per)))
    page.chart(parts, "quality", fig)
    failed = dq[~dq["success"]].head(30)
    if len(failed):
        parts.append(_table(failed.to_dict("records"), ["level", "table_name", "expectation", "observed_value", "unexpected_count"],
                            {"level": "level"}))
    docs = (summary.get("quality") or {}).get("data_docs")
    if docs:
        parts.append(f'<p>Data Docs: <a href="{html.escape(Path(docs).as_uri())}">{html.escape(docs)}</a></p>')


def _metrics(page: _Page, root: str, first: dt.date, as_of: dt.date, analytics: dict) -> None:
    import plotly.graph_objects as go

    parts = page.section("metrics", "Metrics with forecast bands and alerts")
    mt = _read(root, "gold_metrics_daily", ["as_of", "metric", "dimension", "dimension_value", "value"], _since("as_of", first))
    al = _read(root, "ops_alerts", None, _since("as_of", first))
    today = [a for a in analytics.get("alerts", [])]
    if today:
        parts.append(_table([{**a, "drill_down": ", ".join(f"{d['dimension']}={d['value']} ({d['share']:.0%})"
                                                           for d in json.loads(a["drill_down"]))} for a in today],
                            ["severity", "metric", "dimension", "dimension_value", "observed", "expected", "lower", "upper",
                             "direction", "drill_down"], {"severity": "severity"}))
    else:
        parts.append(f'<p style="grid-column:1/-1">No alert on {as_of}: {analytics.get("forecast", 0)} series forecast, '
                     f'{analytics.get("no_forecast_yet", 0)} with no forecast yet ({html.escape(analytics.get("method", ""))}).</p>')
    mt = mt[mt["dimension"] == TOTAL]
    if mt.empty:
        return page.empty(parts, "no metrics computed yet")
    order = {n: i for i, n in enumerate(analytics.get("order") or [])}  # conf order; others after, by name
    for name in sorted(mt["metric"].unique(), key=lambda n: (order.get(n, len(order)), n)):
        g = mt[mt["metric"] == name].sort_values("as_of")
        info = (analytics.get("metrics") or {}).get(name, {})
        traces = []
        band = info.get("band")
        if band:
            traces += [go.Scatter(x=band["dates"] + band["dates"][::-1], y=band["upper"] + band["lower"][::-1], fill="toself",
                                  fillcolor="rgba(84,174,255,.2)", line={"width": 0}, name="forecast band", hoverinfo="skip")]
        traces.append(go.Scatter(x=g["as_of"], y=g["value"], mode="lines+markers", name=name, line={"color": "#0969da"}))
        if info.get("expected") is not None:
            traces.append(go.Scatter(x=[as_of], y=[info["expected"]], mode="markers", name="forecast", marker={"color": "#8250df"},
                                     error_y={"type": "data", "symmetric": False, "array": [info["upper"] - info["expected"]],
                                              "arrayminus": [info["expected"] - info["lower"]]}))
        hits = al[(al["metric"] == name) & (al["dimension"] == TOTAL)] if len(al) else al
        if len(hits):
            traces.append(go.Scatter(x=hits["as_of"], y=hits["observed"], mode="markers", name="alert",
                                     marker={"color": "#cf222e", "size": 13, "symbol": "x"}))
        fig = go.Figure(traces)
        fig.update_layout(title=f"{name} ({info.get('status', 'no forecast yet')})")
        page.chart(parts, f"metric_{name}", fig)


def _funnels(page: _Page, root: str, as_of: dt.date) -> None:
    import plotly.graph_objects as go

    parts = page.section("funnels", "Funnels")
    f = _read(root, "gold_funnels", None, _since("as_of", as_of))
    f = f[(f["as_of"] == as_of) & (f["dimension"] == TOTAL)] if len(f) else f
    if f.empty:
        return page.empty(parts, f"no funnel entries as of {as_of}")
    for name, g in f.groupby("funnel", sort=False):
        steps = g.groupby(["step", "step_name"], as_index=False)["people"].sum().sort_values("step")
        days = f"{g['cohort_date'].min()} .. {g['cohort_date'].max()}"
        fig = go.Figure(go.Funnel(y=steps["step_name"], x=steps["people"], textinfo="value+percent initial"))
        fig.update_layout(title=f"{name}: entries {days} (people per entry day, summed)")
        page.chart(parts, f"funnel_{name}", fig)


def _retention(page: _Page, root: str, as_of: dt.date) -> None:
    import plotly.graph_objects as go

    parts = page.section("retention", "Retention")
    r = _read(root, "gold_retention", None, _since("as_of", as_of))
    r = r[r["as_of"] == as_of] if len(r) else r
    if r.empty:
        return page.empty(parts, f"no cohorts as of {as_of}")
    for name, g in r.groupby("retention", sort=False):
        grid = g.pivot_table(index="cohort", columns="period_n", values="rate").sort_index()
        sizes = g.groupby("cohort")["cohort_people"].first().reindex(grid.index)
        fig = go.Figure(go.Heatmap(z=grid.values, x=[f"{g['period'].iloc[0]} {n}" for n in grid.columns],
                                   y=[f"{c} ({sizes[c]:,})" for c in grid.index], colorscale="Blues", zmin=0, zmax=1,
                                   text=[[f"{v:.0%}" if pd.notna(v) else "" for v in row] for row in grid.values],
                                   texttemplate="%{text}", hovertemplate="%{y} %{x}: %{z:.1%}<extra></extra>"))
        fig.update_layout(title=f"{name}: returned share by cohort", yaxis_autorange="reversed")
        page.chart(parts, f"retention_{name}", fig)


def _transitions(page: _Page, root: str, as_of: dt.date) -> None:
    import plotly.graph_objects as go

    parts = page.section("transitions", "Lifecycle and segment transitions")
    t = _read(root, "gold_transitions", None, _since("as_of", as_of))
    t = t[t["as_of"] == as_of] if len(t) else t
    if t.empty:
        return page.empty(parts, f"no earlier snapshot to compare {as_of} with yet")
    for name, g in t.groupby("transition", sort=False):
        grid = g.pivot_table(index="from_state", columns="to_state", values="people", fill_value=0)
        fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale="Purples",
                                   text=grid.values, texttemplate="%{text}",
                                   hovertemplate="%{y} → %{x}: %{z}<extra></extra>"))
        fig.update_layout(title=f"{name}: {g['from_date'].iloc[0]} → {as_of} (people)", xaxis_title="to", yaxis_title="from")
        page.chart(parts, f"transition_{name}", fig)


def write_report(cfg: CdpConfig, run_id: str, summary: dict, analytics: dict | None = None) -> Path:
    """Write _runs/<run>/report.html for the run's summary; `analytics`: the analytics stage's figures
    (alerts, forecast bands). Returns the file's path."""
    root = cfg.paths.lakehouse_uri()
    as_of = dt.date.fromisoformat(summary["batch_date"])
    first = as_of - dt.timedelta(days=cfg.analytics.report.days - 1)
    analytics = {**(analytics or {}), "order": [m.name for m in cfg.analytics.metrics]}
    page = _Page()
    _metrics(page, root, first, as_of, analytics)
    _funnels(page, root, as_of)
    _retention(page, root, as_of)
    _transitions(page, root, as_of)
    _rows_per_table(page, root, first)
    _quarantine(page, root, first)
    _identity(page, root, first)
    _segments(page, root, first)
    _quality(page, root, run_id, summary)
    newest = latest_partition(root, "gold_metrics_daily", "as_of")
    subtitle = (f"run {run_id} · batch {as_of} · engine {summary.get('engine')} · {summary.get('seconds_total', 0):.0f} s"
                + (f" · newest metrics {newest}" if newest else ""))
    out = cfg.paths.runs(run_id) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page.render(f"CDP run report: {as_of}", subtitle), encoding="utf-8")
    return out
