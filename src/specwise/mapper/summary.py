"""The map's last words in the terminal: the whole-workload rows and what to run."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from specwise.mapper.measures import ALL


def _load(row: dict[str, object]) -> str:
    return f"c={row['concurrency']}" if "concurrency" in row else f"r={row['rate']:g}"


def print_rows(rows: list[dict[str, object]], title: str, console: Console | None = None) -> None:
    """The whole-workload rows, one line per load and config."""
    table = Table(title=title)
    for col in ("load", "config", "p50 s", "p99 s", "TTFT s", "TPOT ms", "tok/s", "accept", "tok/step"):
        table.add_column(col, justify="left" if col in ("load", "config") else "right")
    for row in rows:
        if row["segment"] != ALL:
            continue
        table.add_row(
            _load(row), row["config"], f"{row['p50_latency_s']:.2f}", f"{row['p99_latency_s']:.2f}", f"{row['p50_ttft_s']:.2f}",
            f"{1000 * row['p50_tpot_s']:.1f}", f"{row['throughput_tok_s']:.1f}", f"{row['acceptance_rate']:.2f}",
            f"{row['mean_acceptance_length']:.2f}",
        )  # fmt: skip
    (console or Console()).print(table)


def print_summary(report: dict[str, object], directory: Path, console: Console | None = None) -> None:
    console = console or Console()
    print_rows(report["measured"], f"map of {report['workload']['name']} on {report['target']['name']}", console)  # type: ignore[arg-type, index]
    rec = report.get("recommendation")
    if rec:
        console.print(f"[bold]Recommendation[/bold] at {rec['basis'] if rec['basis'] != 'measured' else _expected(rec)}:")  # type: ignore[index]
        console.print(f"  overall: [bold]{rec['overall']['config']}[/bold] - {rec['overall']['reason']}")  # type: ignore[index]
        for segment, r in rec["segments"].items():  # type: ignore[index, union-attr]
            console.print(f"  {segment}: {r['config']} - {r['reason']}")
        if all(row.get("repeats", 1) == 1 for row in report["measured"]):  # type: ignore[union-attr]
            console.print("  (one repeat: single runs drift by 10-30% on a busy machine; --repeats 3 gives medians and their spread)")
    else:
        console.print(f"No recommendation: {report.get('recommendation_missing')}")
    console.print(f"Report: {directory / 'report.html'} (figures in {directory / 'report.json'}, calibration in {directory / 'calibration.json'})")


def _expected(rec: dict[str, object]) -> str:
    expected = rec["expected"]
    return ", ".join(f"{k}={v:g}" for k, v in expected.items() if k != "burstiness")  # type: ignore[union-attr]
