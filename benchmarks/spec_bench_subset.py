"""Write a balanced subset of Spec-Bench (the first N records of each of its six groups)
as a prompts file for ``specwise bench`` / ``specwise generate --prompts``.

    python benchmarks/spec_bench_subset.py --per-group 8 --output /tmp/sb48.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "spec_bench_dev.jsonl"
MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-group", type=int, default=8)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    taken: dict[str, list[dict]] = defaultdict(list)
    for line in DATA.read_text().splitlines():
        rec = json.loads(line)
        group = "multi-turn" if rec["category"] in MT_BENCH else rec["category"]
        if len(taken[group]) < args.per_group:
            taken[group].append({"id": str(rec["question_id"]), "turns": rec["turns"], "segment": group})
    # Interleave the groups so any prefix of the file is mixed too.
    rows = [g[i] for i in range(args.per_group) for g in taken.values() if i < len(g)]
    args.output.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} prompts to {args.output}")


if __name__ == "__main__":
    main()
