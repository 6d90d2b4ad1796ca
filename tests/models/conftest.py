"""Fixtures shared by the model tests, which run in ``.venv-models``; the helpers are imported inside the
fixtures so that collecting this folder without torch (the base environment) skips its tests, not fails."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def snapshot(tmp_path: Path) -> Path:
    """A tiny random-weight MERT snapshot directory."""
    from tiny_weights import write_snapshot

    write_snapshot(tmp_path / "mert")
    return tmp_path / "mert"


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache that huggingface_hub (offline) uses as its default."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture()
def muq_repos(tmp_path: Path) -> Path:
    """MuQ-MuLan's three repositories with tiny random weights, one subdirectory each (the --weights layout)."""
    from tiny_muq import write_repos

    return write_repos(tmp_path / "muq")
