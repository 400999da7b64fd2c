"""calibration.json: what a simulator needs to replay this workload on this machine
at loads that were not measured: the step costs (the profile and every measured
step's shape and time), per-segment acceptance by draft position and per-config,
prompt and output lengths, the scheduler's settings, and the model and machine
it came from (a calibration from another model or machine must not be used
silently)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from specwise.mapper.records import Run, WorkItem

VERSION = 2
MAX_STEPS = 20_000


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "specwise": version("specwise")}  # fmt: skip


def acceptance_counts(runs: Sequence[Run], segment: str) -> dict[str, dict[str, list[int]]]:
    """Per config: its drafter, verify steps, and drafts verified and accepted at each
    position, summed over runs."""
    out: dict[str, dict[str, list[int]]] = {}
    for run in runs:
        if not run.config.speculates:
            continue
        entry = out.setdefault(run.config.name, {"drafter": run.config.drafter, "steps": 0, "drafted_by_position": [], "accepted_by_position": []})  # type: ignore[dict-item]
        for r in run.records:
            if r.segment != segment or not r.ok:
                continue
            entry["steps"] += r.steps or 0  # type: ignore[operator]
            for key, mine in (("drafted_by_position", r.drafted_by_position), ("accepted_by_position", r.accepted_by_position)):
                counts = entry[key]
                counts.extend([0] * (len(mine) - len(counts)))
                for j, n in enumerate(mine):
                    counts[j] += n
    return out


def calibration(target: object, runs: Sequence[Run], items: Sequence[WorkItem], settings: dict[str, object]) -> dict[str, object]:
    """``target``: the engine target (step costs, model) or an endpoint (lengths and acceptance only)."""
    segments = sorted({r.segment for run in runs for r in run.records})
    lengths: dict[str, dict[str, list[int]]] = {s: {"prompt_tokens": [], "output_tokens": []} for s in segments}
    plain = [run for run in runs if not run.config.speculates] or list(runs)
    for r in plain[0].records if plain else []:
        if r.ok:
            lengths[r.segment]["prompt_tokens"].append(r.prompt_tokens)
            lengths[r.segment]["output_tokens"].append(r.output_tokens)
    out: dict[str, object] = {
        "version": VERSION,
        "workload": {"requests": len(items)},
        "target": getattr(target, "kind", "endpoint"),
        "machine": machine(),
        "settings": settings,
        "configs": [asdict(c) for c in dict.fromkeys(run.config for run in runs)],
        "segments": {s: {**lengths[s], "acceptance": acceptance_counts(runs, s)} for s in segments},
        "requests": [[r.segment, r.prompt_tokens, r.output_tokens] for r in (plain[0].records if plain else []) if r.ok],
    }
    llm = getattr(target, "llm", None)
    if llm is not None:
        from specwise.costs import step_cost_model
        from specwise.models import native
        from specwise.threads import in_passing_thread

        profile = in_passing_thread(lambda: step_cost_model(llm.model, llm.model_key))
        steps = getattr(target, "steps", [])
        if len(steps) > MAX_STEPS:  # an even sample keeps the shape of the run
            steps = [steps[i] for i in np.linspace(0, len(steps) - 1, MAX_STEPS).astype(int)]
        out["model"] = {"name": llm.source.name, "path": str(llm.source), "size_bytes": llm.source.stat().st_size, "weights": llm.weight_format, "config": asdict(llm.config)}
        out["machine"]["kernel_build"] = native.build_id()  # type: ignore[index]
        out["scheduler"] = {"max_batched_tokens": llm.max_batched_tokens, "max_model_len": llm.max_model_len}
        out["step_cost_profile"] = {"rows": list(profile.rows), "seconds": list(profile.seconds)}
        out["steps"] = {"fields": ["rows", "decoding", "prefilling", "context", "target_s", "draft_s"],
                        "samples": [[s.rows, s.decoding, s.prefilling, s.context, round(s.target_s, 6), round(s.draft_s, 6)] for s in steps]}  # fmt: skip
    return out
