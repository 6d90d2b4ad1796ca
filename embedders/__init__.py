"""Audio embedders by name: ``get_embedder("dsp")``.

Each name maps to a factory that imports its module only when asked for, so importing this package
(as the CLI and the flows do) does not pay for librosa, and later torch and model weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from embedders.base import Embedder


class EmbedderUnavailableError(LookupError):
    """The requested embedder does not exist here (yet); the message says which ones do."""


def _dsp(weights: Path | None, device: str) -> Embedder:
    from embedders.dsp import DspEmbedder

    return DspEmbedder()


@contextmanager
def _models_extra(name: str) -> Iterator[None]:
    """A missing model dependency (torch, transformers, music2latent, muq) becomes the command that installs it."""
    try:
        yield
    except ModuleNotFoundError as error:
        raise EmbedderUnavailableError(
            f"embedder {name!r} needs the models extra ({error.name} is not installed): "
            "pip install -e '.[models]'"
        ) from error


def _mert(weights: Path | None, device: str) -> Embedder:
    with _models_extra("mert"):
        from embedders.mert import MertEmbedder
    return MertEmbedder(weights, device=device)


def _music2latent(weights: Path | None, device: str) -> Embedder:
    with _models_extra("music2latent"):
        from embedders.music2latent import Music2LatentEmbedder
    return Music2LatentEmbedder(weights, device=device)


def _muq(weights: Path | None, device: str) -> Embedder:
    with _models_extra("muq"):
        from embedders.muq import MuqEmbedder
    return MuqEmbedder(weights, device=device)


_FACTORIES: dict[str, Callable[[Path | None, str], Embedder]] = {
    "dsp": _dsp, "mert": _mert, "music2latent": _music2latent, "muq": _muq,
}


def embedder_names() -> list[str]:
    """Embedders that can be used now, in name order."""
    return sorted(_FACTORIES)


def get_embedder(name: str, *, weights: Path | None = None, device: str = "cpu") -> Embedder:
    """A ready embedder on ``device`` ("cpu", "cuda", "cuda:1"), its weights from ``weights`` or the Hugging
    Face cache (see :mod:`embedders.weights`). Raises :class:`EmbedderUnavailableError` naming the choices
    for an unknown name, :class:`embedders.weights.MissingWeightsError` when the weights are not here."""
    available = ", ".join(embedder_names())
    factory = _FACTORIES.get(name)
    if factory is not None:
        return factory(weights, device)
    raise EmbedderUnavailableError(f"unknown embedder {name!r}; available: {available}.")


_MODEL_DIMS = {"muq": 1536, "mert": 76_800, "music2latent": 576}
"""The architecture's stored sizes of the weight-bearing models, known without loading any weights."""


def stored_dim(name: str) -> int:
    """The size of ``name``'s enriched vectors, for checking shards without loading a model."""
    return _MODEL_DIMS.get(name) or 3 * get_embedder(name).frame_dim
