"""Where specwise keeps what it builds or fetches (kernels, model files, calibrations)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SPECWISE_CACHE``, else ``$XDG_CACHE_HOME/specwise``, else ``~/.cache/specwise``."""
    explicit = os.environ.get("SPECWISE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "specwise"
