"""The map's HTML report: structure on synthetic reports, then the page as headless Chromium renders it."""

from __future__ import annotations

import base64
import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest

from specwise.mapper.html import write_report_html

HOSTILE = '<script>alert("x")</script> & $x$'
SEGMENTS = {"chat": 40, "code": 30, HOSTILE: 10}
CONFIGS = ["plain", "fixed", "adaptive"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "map-report.png"


def _row(config: str, key: str, load: float, segment: str, knee: float, simulated: bool = False) -> dict:
    """Speculation wins at light load and loses past ``knee``, where the batch is compute-bound."""
    base = {"all": 2.0, "chat": 2.2, "code": 1.5, HOSTILE: 2.6}[segment]
    peak = {"plain": 1.0, "fixed": 1.8, "adaptive": 1.7}[config]
    speedup = 1 + (peak - 1) * max(-0.3, 1 - load / knee)
    p50 = base * (1 + 0.15 * load / knee * 8) / speedup
    spec = config != "plain"
    first = {"plain": 0.0, "fixed": 0.82, "adaptive": 0.88}[config] - (0.06 if segment == "chat" else 0)
    by_position = [round(first - 0.1 * j, 3) for j in range(4)] if spec else []
    row = {
        "config": config, key: load, **({} if key == "concurrency" else {"burstiness": 1.0}), "segment": segment,
        "requests": sum(SEGMENTS.values()) if segment == "all" else SEGMENTS[segment],
        "errors": 1 if (config == "fixed" and segment == "code") else 0, "repeats": 3,
        "p50_latency_s": p50, "p90_latency_s": 1.3 * p50, "p99_latency_s": 1.8 * p50,
        "p50_ttft_s": 0.05 * (1 + load / knee), "p90_ttft_s": 0.08 * (1 + load / knee), "p99_ttft_s": 0.12 * (1 + load / knee),
        "p50_tpot_s": p50 / 128, "p90_tpot_s": 1.3 * p50 / 128,
        "p50_itl_s": p50 / 128 * (2.4 if spec else 1), "p99_itl_s": p50 / 64 * (2.4 if spec else 1),
        "throughput_tok_s": 128 * load / p50 * (1 if key == "concurrency" else 4),
        "goodput_req_s": 0.9 * load / p50,
        "acceptance_rate": 0.72 if spec else 0.0, "mean_acceptance_length": 2.6 if spec else 0.0,
        "acceptance_by_position": by_position,
        "spread": {
            "throughput_tok_s": [0.95 * 128 * load / p50, 1.05 * 128 * load / p50],
            "p50_latency_s": [0.96 * p50, 1.04 * p50],
        },
    }
    if simulated:
        row["simulated"] = True
        row["repeats"] = 0
        del row["spread"]
    return row


def _rec(config: str, segment: str, key: str, off: float | None) -> dict:
    spec = config != "plain"
    return {
        "config": config, "speculate": spec, "drafter": "ngram" if spec else "none", "num_speculative_tokens": 4 if spec else 0,
        "policy": config, "gain": 1.42 if spec else 1.0, "gain_low": 1.31 if spec else 1.0, "gain_high": 1.55 if spec else 1.0,
        "turn_off_above": off, "reason": f"{config} is fastest for {segment} at the expected load; acceptance 0.72 (K=4)",
    }


def synthetic_report(key: str, loads: Sequence[float], simulated_loads: Sequence[float] = ()) -> dict:
    """A map of 3 configs x 3 segments (one named like markup) at the given loads."""
    knee = 8.0 if key == "concurrency" else 1.5
    segments = ["all", *SEGMENTS]
    measured = [_row(c, key, load, s, knee) for s in segments for c in CONFIGS for load in loads]
    simulated = [_row(c, key, load, s, knee, simulated=True) for s in segments for c in CONFIGS for load in simulated_loads]
    expected = loads[len(loads) // 2]
    report = {
        "version": 1,
        "created": "2026-12-02T02:30:00Z",
        "target": {"kind": "engine", "name": "specwise (in-process)", "model": "qwen2.5-0.5b-instruct-q8_0"},
        "workload": {"name": "support-mix", "requests": sum(SEGMENTS.values()), "segments": dict(SEGMENTS)},
        "loads": [{key: load} if key == "concurrency" else {"rate": load, "burstiness": 1.0} for load in loads],
        "configs": list(CONFIGS),
        "slo": {"ttft_s": 1.0, "tpot_s": 0.1},
        "measured": measured,
        "stopped": None,
        "recommendation": {
            "expected": {key: expected},
            "basis": "measured",
            "overall": _rec("adaptive", "the whole workload", key, knee),
            "segments": {"chat": _rec("fixed", "chat", key, knee), "code": _rec("adaptive", "code", key, None),
                         HOSTILE: _rec("plain", HOSTILE, key, None)},
        },
        "crossover": {"all": {"config": "adaptive", key: knee}, "chat": {"config": "fixed", key: knee},
                      "code": {"config": None, key: None}, HOSTILE: {"config": None, key: None}},
    }
    if simulated:
        report["simulated"] = simulated
    return report


class _Page(HTMLParser):
    """Tables (body rows per id), plots, every src/href, and any script element."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, int] = {}
        self.plots: list[dict[str, str]] = []
        self.links: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self._table: str | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag == "script":
            self.scripts += 1
        elif tag == "table":
            self._table = a.get("id", "")
            self.rows[self._table] = 0
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table is not None and self._in_body:
            self.rows[self._table] += 1
        elif tag in ("img", "svg") and "plot" in a.get("class", "").split():
            self.plots.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _expect_structure(page: str, report: dict) -> _Page:
    parsed = _parse(page)
    measured, simulated = len(report["measured"]), len(report.get("simulated", []))
    assert parsed.rows["recommendation"] == 1 + len(report["recommendation"]["segments"])
    assert parsed.rows["measured"] == measured == len(CONFIGS) * len(report["loads"]) * (1 + len(SEGMENTS))
    assert parsed.rows.get("simulated", 0) == simulated
    assert sorted(p.get("data-kind") for p in parsed.plots) == ["acceptance", "latency", "throughput"]
    assert parsed.scripts == 0
    return parsed


CASES = {
    "closed-loop-3-loads-simulated": ("concurrency", [1, 4, 16], [2, 8]),
    "open-loop-2-loads": ("rate", [0.5, 2.0], []),
}


@pytest.mark.parametrize("case", CASES)
def test_report_structure(case: str, tmp_path: Path) -> None:
    key, loads, simulated_loads = CASES[case]
    report = synthetic_report(key, loads, simulated_loads)
    path = tmp_path / "out" / "report.html"
    write_report_html(report, path)
    page = path.read_text(encoding="utf-8")
    parsed = _expect_structure(page, report)

    for link in parsed.links:
        assert link.startswith("data:image/png;base64,"), link[:60]
    assert "http://" not in page and "https://" not in page
    for plot in parsed.plots:
        assert base64.b64decode(plot["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"

    assert HOSTILE not in page and "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; $x$" in page
    text = "".join(parsed.text)
    assert HOSTILE in text  # escaped, so it reads back as the user wrote it
    assert "not within the loads measured (it pays at the highest)" in text
    if key == "concurrency":
        assert "crossover at c=8, past which no speculative config beats plain (best at the lowest load: adaptive)" in text
        assert "simulated" in text and page.count('<tr class="simulated">') == len(report["simulated"])
    else:
        assert "r=2/s" in text


def test_report_without_speculative_acceptance(tmp_path: Path) -> None:
    """A map of plain alone still writes a page; it says why there is no acceptance plot."""
    report = synthetic_report("concurrency", [1, 2])
    report["configs"] = ["plain"]
    report["measured"] = [r for r in report["measured"] if r["config"] == "plain"]
    report["crossover"] = {"all": {"config": None, "concurrency": None}}
    path = tmp_path / "report.html"
    write_report_html(report, path)
    parsed = _parse(path.read_text(encoding="utf-8"))
    assert sorted(p.get("data-kind") for p in parsed.plots) == ["latency", "throughput"]
    assert "no acceptance plot" in "".join(parsed.text)


def test_report_without_recommendation(tmp_path: Path) -> None:
    """A map stopped before plain and a speculative config both completed: the page says so instead of a table."""
    report = synthetic_report("concurrency", [1, 4])
    report.update(recommendation=None, crossover={}, stopped="interrupted",
                  recommendation_missing="no complete run of plain and a speculative config")
    path = tmp_path / "report.html"
    write_report_html(report, path)
    parsed = _parse(path.read_text(encoding="utf-8"))
    text = "".join(parsed.text)
    assert "recommendation" not in parsed.rows and parsed.rows["measured"] == len(report["measured"])
    assert "No recommendation: no complete run of plain and a speculative config." in text
    assert "stopped early (interrupted)" in text


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    """The DOM Chromium builds holds the tables, and the screenshot is a drawn page, not a blank one."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    from PIL import Image

    report = synthetic_report("concurrency", [1, 4, 16], [2, 8])
    path = tmp_path / "report.html"
    write_report_html(report, path)

    dom = _chromium(["--dump-dom", path.as_uri()], tmp_path).stdout
    _expect_structure(dom, report)

    shot = tmp_path / "map-report.png"
    _chromium(["--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", path.as_uri()], tmp_path)
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 64, "screenshot has almost no colours: the page did not render"
    white = {colour: count for count, colour in colours}.get((255, 255, 255), 0)
    assert white < 0.95 * math.prod(rgb.size), "screenshot is almost all white"
    if os.environ.get("SPECWISE_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
