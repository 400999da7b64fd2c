"""The map's report as one self-contained HTML page (DIR/report.html).

It has to open anywhere, offline, attached to a ticket or mailed, so it holds
everything inline: plots are base64 PNGs drawn with matplotlib's Agg canvas and
the style is one small block; nothing is fetched. Segment names, configs and ids
come from users, so every string taken from the report is escaped, and a
Content-Security-Policy forbids scripts and any load besides inline images."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

LOG_SPAN = 8.0
"""Loads spanning more than this ratio get a log-scaled axis, so the low loads are not crushed together."""

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #fff;
       max-width: 1240px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d8dde6; padding-bottom: 4px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.meta dt { color: #5b6475; } dl.meta dd { margin: 0; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #d8dde6; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #eef1f6; font-weight: 600; }
td.text, th.text { text-align: left; }
#recommendation { width: 100%; } #recommendation td { white-space: normal; }
td.reason { text-align: left; min-width: 240px; } #recommendation td.gain { white-space: nowrap; }
tr.overall td { background: #f4f8ee; font-weight: 600; }
tr.simulated td { color: #5b6475; font-style: italic; }
.wide { overflow-x: auto; }
.speculate { color: #1f7a3a; } .plain { color: #8a5a00; }
.note { color: #5b6475; font-size: 13px; }
.warn { color: #8a1c1c; background: #fdf0f0; padding: 6px 10px; border-left: 3px solid #c43d3d; }
figure { margin: 12px 0 20px; } figcaption { color: #5b6475; font-size: 13px; }
img.plot { max-width: 100%; height: auto; border: 1px solid #eef1f6; }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

# (key, header, kind) for the full tables; the kind picks the formatting.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("requests", "requests", "int"),
    ("errors", "errors", "int"),
    ("repeats", "repeats", "int"),
    ("p50_latency_s", "p50 latency (s)", "s"),
    ("p90_latency_s", "p90 latency (s)", "s"),
    ("p99_latency_s", "p99 latency (s)", "s"),
    ("p50_ttft_s", "p50 TTFT (ms)", "ms"),
    ("p90_ttft_s", "p90 TTFT (ms)", "ms"),
    ("p99_ttft_s", "p99 TTFT (ms)", "ms"),
    ("p50_tpot_s", "p50 TPOT (ms)", "ms"),
    ("p90_tpot_s", "p90 TPOT (ms)", "ms"),
    ("p50_itl_s", "p50 ITL (ms)", "ms"),
    ("p99_itl_s", "p99 ITL (ms)", "ms"),
    ("throughput_tok_s", "throughput (tok/s)", "tput"),
    ("goodput_req_s", "goodput (req/s)", "f2"),
    ("acceptance_rate", "acceptance", "f2"),
    ("mean_acceptance_length", "mean accepted length", "f2"),
)


def write_report_html(report: dict, path: Path) -> None:
    """Write ``report`` (what report.json holds) as one self-contained page at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report_html(report), encoding="utf-8")


def render_report_html(report: dict) -> str:
    """The page as a string: header, recommendation, plots, then every row."""
    key = _load_key(report)
    measured = list(report.get("measured") or [])
    simulated = list(report.get("simulated") or [])
    configs = _ordered(report.get("configs") or [], (r["config"] for r in measured + simulated))
    segments = _ordered(["all", *(report.get("workload") or {}).get("segments", {})], (r["segment"] for r in measured))
    target = report.get("target") or {}
    title = f"specwise map: {target.get('name', '')}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        _header(report, key),
        _recommendation(report, key),
        _plots(report, key, configs, segments, measured, simulated),
        '<h2>Measured</h2><div class="wide">',
        _rows_table("measured", _sorted_rows(measured, configs, segments)),
        "</div>",
    ]
    if simulated:
        parts += [
            "<h2>Simulated</h2>",
            '<p class="note">Loads that were not run: these figures are estimates, not measurements.</p>',
            '<div class="wide">',
            _rows_table("simulated", _sorted_rows(simulated, configs, segments)),
            "</div>",
        ]
    parts.append(f'<p class="note">Report format version {escape(str(report.get("version", "")))}.</p></body></html>')
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- text


def _load_key(report: dict) -> str:
    """``concurrency`` for a closed-loop map, ``rate`` for an open-loop one."""
    loads = list(report.get("loads") or []) + list(report.get("measured") or [])
    return "rate" if loads and all("concurrency" not in item for item in loads) else "concurrency"


def _load_label(key: str, value: Any) -> str:
    if value is None:
        return "—"
    return f"c={value:g}" if key == "concurrency" else f"r={value:g}/s"


def _axis_label(key: str) -> str:
    return "concurrency (requests in flight)" if key == "concurrency" else "arrival rate (requests/s)"


def _ordered(first: Iterable[str], rest: Iterable[str]) -> list[str]:
    """Names in the report's own order, then any that only the rows mention."""
    return list(dict.fromkeys([*first, *rest]))


def _num(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if kind == "int":
        return str(int(value))
    if kind == "s":
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    if kind == "ms":
        return f"{value * 1000:.1f}" if value < 0.1 else f"{value * 1000:.0f}"
    if kind == "tput":
        return f"{value:.1f}"
    return f"{value:.2f}"


def _header(report: dict, key: str) -> str:
    target = report.get("target") or {}
    workload = report.get("workload") or {}
    segments = workload.get("segments") or {}
    loads = [item.get(key) for item in report.get("loads") or []]
    burst = {item.get("burstiness", 1.0) for item in report.get("loads") or [] if key == "rate"}
    slo = report.get("slo") or {}
    rows = [
        ("target", f"{target.get('name', '')} ({target.get('kind', '')})"),
        ("model", target.get("model", "")),
        ("workload", f"{workload.get('name', '')}, {workload.get('requests', '')} requests"),
        ("segments", ", ".join(f"{name} ({count})" for name, count in segments.items()) or "—"),
        ("loads", ", ".join(_load_label(key, v) for v in loads)),
        ("configs", ", ".join(str(c) for c in report.get("configs") or [])),
        ("created", report.get("created", "")),
    ]
    if burst - {1.0}:
        rows.insert(5, ("burstiness", ", ".join(f"{b:g}" for b in sorted(burst))))
    if slo:
        rows.append(("SLO", ", ".join(f"{name.removesuffix('_s')} ≤ {value:g} s" for name, value in slo.items())))
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows)
    return f"<header><h1>{escape('specwise map: ' + str(target.get('name', '')))}</h1><dl class=\"meta\">{items}</dl></header>"


def _recommendation(report: dict, key: str) -> str:
    rec = report.get("recommendation") or {}
    head = "<h2>Recommendation</h2>"
    if report.get("stopped"):
        head += f'<p class="warn">The map stopped early ({escape(str(report["stopped"]))}): only complete runs count.</p>'
    if not rec:
        why = report.get("recommendation_missing") or "too little was measured to compare configs"
        return head + f'<p class="warn">No recommendation: {escape(str(why))}.</p>'
    expected = rec.get("expected") or {}
    head += (
        f'<p>At the expected load <b>{escape(_load_label(key, expected.get(key)))}</b>'
        f' (basis: {escape(str(rec.get("basis", "—")))}). '
        "Gain is the ratio to plain decoding at that load, with its spread over repeats; "
        "past the turn-off load no speculative config beats plain.</p>"
    )
    columns = ("segment", "run", "drafter", "K", "policy", "gain", "turn off above", "reason")
    text_columns = ("segment", "run", "drafter", "policy", "reason")
    header = "".join(f'<th class="{"text" if c in text_columns else ""}">{c}</th>' for c in columns)
    body = []
    entries = [("whole workload", rec.get("overall")), *(rec.get("segments") or {}).items()]
    for i, (label, entry) in enumerate(entries):
        if not entry:
            continue
        speculate = bool(entry.get("speculate"))
        run = f"{entry.get('config', '')}" if speculate else f"{entry.get('config', '')} (no speculation)"
        gain = f"{_num(entry.get('gain'), 'f2')}× ({_num(entry.get('gain_low'), 'f2')}–{_num(entry.get('gain_high'), 'f2')})"
        off = entry.get("turn_off_above")
        cells = [
            ("text", label),
            ("text " + ("speculate" if speculate else "plain"), run),
            ("text", entry.get("drafter", "") if speculate else "—"),
            ("", entry.get("num_speculative_tokens", 0) if speculate else "—"),
            ("text", entry.get("policy", "")),
            ("gain", gain),
            ("", _load_label(key, off) if off is not None else "not within the loads measured (it pays at the highest)"),
            ("reason", entry.get("reason", "")),
        ]
        cls = ' class="overall"' if i == 0 else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="{c}">{escape(str(v))}</td>' for c, v in cells) + "</tr>")
    table = f'<table id="recommendation"><thead><tr>{header}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return head + f'<div class="wide">{table}</div>'


def _sorted_rows(rows: Sequence[dict], configs: list[str], segments: list[str]) -> list[dict]:
    """Whole workload first, then each segment; configs in the report's order; loads rising."""
    return sorted(rows, key=lambda r: (segments.index(r["segment"]) if r["segment"] in segments else len(segments),
                                       configs.index(r["config"]), _row_load(r)))


def _row_load(row: dict) -> tuple[str, float]:
    """A row's own load (a map may mix closed- and open-loop loads; the plots show the report's main kind)."""
    kind = "concurrency" if row.get("concurrency") is not None else "rate"
    return kind, row.get(kind) or 0.0


def _rows_table(table_id: str, rows: Sequence[dict]) -> str:
    head = '<th class="text">segment</th><th class="text">config</th><th>load</th>'
    head += "".join(f"<th>{escape(label)}</th>" for _, label, _ in _COLUMNS)
    body = []
    for row in rows:
        cells = [("text", row["segment"]), ("text", row["config"]), ("", _load_label(*_row_load(row)))]
        spread = row.get("spread") or {}
        for name, _, kind in _COLUMNS:
            text = _num(row.get(name), kind)
            if name in spread and len(spread[name]) == 2 and text != "—":
                low, high = spread[name]
                text += f" ({_num(low, kind)}–{_num(high, kind)})"
            cells.append(("", text))
        cls = ' class="simulated"' if row.get("simulated") else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="{c}">{escape(str(v))}</td>' for c, v in cells) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ----------------------------------------------------------------------------- plots


def _mpl(text: str) -> str:
    """A user's string as literal matplotlib text (a ``$`` would start math mode)."""
    return str(text).replace("$", r"\$")


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(kind: str, fig: Figure, alt: str, caption: str) -> str:
    return (
        f'<figure><img class="plot" data-kind="{kind}" alt="{escape(alt)}" src="data:image/png;base64,{_png(fig)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _load_axis(ax: Axes, key: str, values: Sequence[float]) -> None:
    """Ticks at the loads that were run; log scale when they span more than LOG_SPAN."""
    values = sorted(set(values))
    if values and values[0] > 0 and values[-1] / values[0] > LOG_SPAN:
        ax.set_xscale("log", base=2 if key == "concurrency" else 10)
    ax.set_xticks(values)
    ax.set_xticklabels([f"{v:g}" for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(_axis_label(key))
    ax.grid(True, alpha=0.3)


def _series(rows: Sequence[dict], config: str, key: str, segment: str = "all") -> list[dict]:
    return sorted((r for r in rows if r["config"] == config and r["segment"] == segment and r.get(key) is not None),
                  key=lambda r: r[key])


def _draw(ax: Axes, measured: list[dict], simulated: list[dict], key: str, metric: str, color: str, label: str) -> None:
    """One config's curve: solid and banded by its spread where measured, dashed through the simulated loads."""
    xs = [r[key] for r in measured]
    ax.plot(xs, [r.get(metric) for r in measured], marker="o", color=color, label=label)
    spreads = [(r.get("spread") or {}).get(metric) for r in measured]
    if xs and all(s and len(s) == 2 for s in spreads):
        ax.fill_between(xs, [s[0] for s in spreads], [s[1] for s in spreads], color=color, alpha=0.15, linewidth=0)
    if simulated:
        both = sorted(measured + simulated, key=lambda r: r[key])
        ax.plot([r[key] for r in both], [r.get(metric) for r in both], linestyle="--", color=color, alpha=0.8)
        ax.plot([r[key] for r in simulated], [r.get(metric) for r in simulated], linestyle="none", marker="D",
                markerfacecolor="white", color=color, label=f"{label} (simulated)")


def _plots(report: dict, key: str, configs: list[str], segments: list[str], measured: list[dict], simulated: list[dict]) -> str:
    colors = {c: f"C{i % 10}" for i, c in enumerate(configs)}
    loads = [r[key] for r in measured + simulated if r.get(key) is not None]
    cross = (report.get("crossover") or {}).get("all") or {}
    cross_at = cross.get(key)
    sim_note = " Dashed lines and hollow diamonds are simulated loads, not measured." if simulated else ""
    band_note = " Shaded bands: spread over repeats."
    parts = ["<h2>Latency and throughput against load</h2>"]

    fig = Figure(figsize=(11.5, 4.2), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, metric, name in ((axes[0], "p50_latency_s", "p50"), (axes[1], "p99_latency_s", "p99")):
        for config in configs:
            _draw(ax, _series(measured, config, key), _series(simulated, config, key), key, metric, colors[config], _mpl(config))
        if cross_at is not None:
            ax.axvline(cross_at, color="#444", linestyle=":", linewidth=1.2)
            ax.annotate(f"crossover {_load_label(key, cross_at)}", xy=(cross_at, 0.98), xycoords=("data", "axes fraction"),
                        xytext=(-3, 0), textcoords="offset points", rotation=90, ha="right", va="top", fontsize=8, color="#444",
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
        _load_axis(ax, key, loads)
        ax.set_ylabel(f"{name} request latency (s)")
        ax.set_title(f"{name} latency, whole workload", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    cross_note = ""
    if cross_at is not None:
        best = f" (best at the lowest load: {cross['config']})" if cross.get("config") else ""
        at = _load_label(key, cross_at)
        cross_note = f" Dotted line: the crossover at {at}, past which no speculative config beats plain{best}."
    parts.append(_figure("latency", fig, "p50 and p99 latency against load, per config",
                         "Request latency (send to last token) per config, whole workload." + cross_note + band_note + sim_note))

    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.subplots()
    for config in configs:
        mine, sim = _series(measured, config, key), _series(simulated, config, key)
        _draw(ax, mine, sim, key, "throughput_tok_s", colors[config], _mpl(config))
    if cross_at is not None:
        ax.axvline(cross_at, color="#444", linestyle=":", linewidth=1.2)
    _load_axis(ax, key, loads)
    ax.set_ylabel("throughput (output tokens/s)")
    ax.set_title("throughput, whole workload", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    parts.append(_figure("throughput", fig, "throughput against load, per config",
                         "Output tokens per second across all requests in flight, whole workload." + band_note + sim_note))

    parts.append(_acceptance_plot(report, key, configs, segments, measured, colors))
    return "\n".join(parts)


def _acceptance_plot(report: dict, key: str, configs: list[str], segments: list[str], measured: list[dict],
                     colors: dict[str, str]) -> str:
    """Acceptance by draft position, one panel per segment, at the measured load nearest the expected one
    (acceptance moves little with load, and one load keeps the panels readable)."""
    loads = sorted({r[key] for r in measured if r.get(key) is not None})
    if not loads:
        return '<p class="note">No measured rows: no acceptance plot.</p>'
    expected = ((report.get("recommendation") or {}).get("expected") or {}).get(key) or loads[0]
    at = min(loads, key=lambda v: abs(math.log(v / expected)) if v > 0 and expected > 0 else abs(v - expected))
    rows = [r for r in measured if r.get(key) == at and r.get("acceptance_by_position")]
    shown = [s for s in segments if any(r["segment"] == s for r in rows)]
    if not shown:
        return '<p class="note">No speculative config reported acceptance by draft position: no acceptance plot.</p>'
    cols = min(3, len(shown))
    nrows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(3.9 * cols, 3.1 * nrows), dpi=100)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(shown):
            ax.set_visible(False)
            continue
        segment = shown[i]
        for config in configs:
            for row in rows:
                if row["config"] == config and row["segment"] == segment:
                    probs = row["acceptance_by_position"]
                    ax.plot(range(1, len(probs) + 1), probs, marker="o", color=colors[config], label=_mpl(config))
        ax.set_title(_mpl("whole workload" if segment == "all" else segment), fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("draft position")
        ax.set_ylabel("accepted / drafted")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    fig.tight_layout()
    load = _load_label(key, at)
    return _figure("acceptance", fig, f"acceptance by draft position per segment at {load}",
                   f"Share of the drafts at each position that were accepted, per segment, at {load}"
                   " (speculative configs only).")
