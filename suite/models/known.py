"""The model names timm knows, without importing timm where a cached list will do.

``suite sweep plan`` checks every run's ``model.name`` against timm's registry; importing timm
loads torch (seconds), which a plan otherwise never needs. The list of names (timm's and the
suite's own models) is cached per timm version and per version of the suite's model file, in
``$XDG_CACHE_HOME/tokenmix-suite`` (default ``~/.cache/tokenmix-suite``); the first check on a
machine builds it, later ones read it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
from functools import lru_cache
from pathlib import Path

__all__ = ["is_known_model"]


def _cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tokenmix-suite"
    ours = hashlib.sha256(Path(__file__).with_name("factory.py").read_bytes()).hexdigest()[:12]
    return base / f"timm-{importlib.metadata.version('timm')}-{ours}-models.txt"


def _build() -> frozenset[str]:
    import timm

    import suite.models.factory  # noqa: F401 - registers the suite's small models with timm

    return frozenset(timm.list_models())


@lru_cache(maxsize=1)
def _names() -> frozenset[str]:
    path = _cache_file()
    try:
        return frozenset(path.read_text().split())
    except OSError:
        pass
    names = _build()
    try:  # a cache that cannot be written only costs the next plan the import
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write("\n".join(sorted(names)))
        os.replace(handle.name, path)
    except OSError:
        pass
    return names


def is_known_model(name: str) -> bool:
    """Whether timm (with the suite's models registered) can build ``name``."""
    return name in _names()
