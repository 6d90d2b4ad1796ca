"""Fixtures shared by the model tests, which run in ``.venv-models`` (the models extra: transformers 4.57, muq,
music2latent). Elsewhere this folder is not collected: the base environment has torch and transformers 5 for
training, under which MERT's last hidden state differs and muq does not run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

if importlib.util.find_spec("muq") is None:
    collect_ignore_glob = ["test_*.py"]


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


@pytest.fixture()
def narrow_unet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Music2Latent's ``UNet`` is built from module globals; a narrower network is made by changing them, for
    the checkpoint a test writes and for the ``UNet`` the adapter (or the package) builds to load it."""
    import music2latent.models
    from tiny_weights import REDUCED_UNET

    for name, value in REDUCED_UNET.items():
        monkeypatch.setattr(music2latent.models, name, value)


@pytest.fixture()
def music2latent_weights(tmp_path: Path, narrow_unet: None) -> Path:
    """A directory holding a random-weight ``music2latent.pt`` of the narrow ``UNet`` (the --weights layout)."""
    from tiny_weights import write_music2latent_checkpoint

    write_music2latent_checkpoint(tmp_path / "m2l")
    return tmp_path / "m2l"
