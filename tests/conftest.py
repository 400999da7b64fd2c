"""Shared fixtures: the real default model is loaded once per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("SPECWISE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def llm():
    from specwise import LLM

    return LLM(max_model_len=2048)


def read_jsonl(name: str) -> list[dict]:
    path = DATA_DIR / name
    if not path.exists():
        pytest.skip(f"dev prompt set {path} not present (set SPECWISE_DATA)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
