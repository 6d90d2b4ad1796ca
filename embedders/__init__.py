"""Audio embedders by name: ``get_embedder("dsp")``, ``embedder_spec("muq")``.

Every public module here that defines ``SPEC`` (an :class:`embedders.spec.EmbedderSpec`) is one embedder;
the modules listed in ``_INFRASTRUCTURE`` are the machinery they share. A spec is read without loading any
weights: the model packages (``muq``, ``music2latent``) are imported only when a model is built, so the CLI
and the flows can list, check and plan with every embedder in the default install.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from embedders.base import Embedder
from embedders.spec import EmbedderSpec
from store.errors import UserError

_INFRASTRUCTURE = {
    "audio_input", "base", "enrichment", "runtime", "spec", "torch_enrichment", "torch_runtime", "weights",
    "windows",
}
MODELS_EXTRA = "pip install -e '.[models]'"


class EmbedderUnavailableError(UserError, LookupError):
    """The requested embedder does not exist here (yet); the message says which ones do."""


def embedder_specs() -> dict[str, EmbedderSpec]:
    """Every embedder's spec by name, in name order."""
    specs = (_spec_of(module) for module in _embedder_modules())
    return dict(sorted((spec.name, spec) for spec in specs if spec is not None))


def embedder_names() -> list[str]:
    """Embedders that can be used now, in name order."""
    return list(embedder_specs())


def embedder_spec(name: str) -> EmbedderSpec:
    """``name``'s spec; :class:`EmbedderUnavailableError` naming the choices for an unknown name."""
    specs = embedder_specs()
    if name not in specs:
        raise EmbedderUnavailableError(f"unknown embedder {name!r}; available: {', '.join(specs)}.")
    return specs[name]


def get_embedder(
    name: str, *, weights: Path | None = None, device: str = "cpu", precision: str = "reference"
) -> Embedder:
    """A ready embedder on ``device`` ("cpu", "cuda", "cuda:1"), its weights from ``weights`` or the Hugging
    Face cache (see :mod:`embedders.weights`). Raises :class:`EmbedderUnavailableError` for an unknown name or
    a missing model package, :class:`embedders.weights.MissingWeightsError` when the weights are not here."""
    spec = embedder_spec(name)
    with _models_extra(name):
        return spec.factory(weights, device, precision)


def stored_dim(name: str) -> int:
    """The size of ``name``'s stored vectors, known without loading the model."""
    return embedder_spec(name).stored_dim


def _embedder_modules() -> Iterator[str]:
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg and not info.name.startswith("_") and info.name not in _INFRASTRUCTURE:
            yield info.name


def _spec_of(module_name: str) -> EmbedderSpec | None:
    module = importlib.import_module(f"{__name__}.{module_name}")
    spec = getattr(module, "SPEC", None)
    if spec is not None and not isinstance(spec, EmbedderSpec):
        raise TypeError(f"embedders/{module_name}.py defines SPEC, but not as EmbedderSpec(...)")
    return spec


@contextmanager
def _models_extra(name: str) -> Iterator[None]:
    """A missing model dependency (music2latent, muq, torchaudio) becomes the command that installs it."""
    try:
        yield
    except ModuleNotFoundError as error:
        raise EmbedderUnavailableError(
            f"embedder {name!r} needs the models extra ({error.name} is not installed): {MODELS_EXTRA}"
        ) from error
