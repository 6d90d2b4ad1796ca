"""The text-embedding service Navidrome calls: ``POST /embed_text``, ``GET /models``, ``GET /health``.

Navidrome's recommendation code turns a typed query into a vector by posting ``{"text", "model"}`` to a Python
service and reading ``embedding``, ``model`` and ``dimension`` from the answer (``shared/navidrome.md``, last
section). This module is that service for musictext's trained text embedders: one per audio model, under the
name Navidrome uses for it (``muq``, ``mert``, ``latent``; other embedders under their own names).

Models are loaded once, when the service starts (:func:`load_models`), so the first query is as fast as the
others and a broken checkpoint is reported at start-up rather than to a user's search box. Requests are
batched on the device (:mod:`training.batching`).

Every answer that is not 200 is JSON ``{"detail": message}`` with a message a person can act on: 400 for an
empty text, an unknown model or a body that is not the expected JSON; 503 naming the command that trains the
missing model; 500 for a failure inside the service, without its stack trace (that goes to the service's log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from embedders import embedder_specs
from embedders.spec import EmbedderSpec
from store.errors import InvalidInputError, UserError
from store.layout import DataRoot
from training.batching import BatchEncoder, Encode, device_worker
from training.model import TextEmbedder, load_text_embedder
from training.runs import TrainedRun, newest_run, trained_run

DEFAULT_PORT = 9003
DEFAULT_MODEL = "muq"
"""What Navidrome asks for when its request names no model."""
MAX_TEXT_CHARS = 10_000
"""Far beyond a search query (the encoder reads its first 128 tokens); refuses a pasted document early."""

log = logging.getLogger("musictext.serve")


@dataclass(frozen=True)
class ServedModel:
    """One model name of the service: its audio embedder, and the trained run that answers for it (if any)."""

    name: str
    spec: EmbedderSpec
    run: TrainedRun | None = None
    embedder: TextEmbedder | None = None
    reason: str = ""
    """Why no run answers for it, for ``/models`` and the 503."""

    @property
    def available(self) -> bool:
        return self.embedder is not None

    @property
    def description(self) -> str:
        if self.run is None:
            return f"{self.spec.summary}. Unavailable: {self.reason}"
        head = self.run.config.head
        return f"{self.spec.summary}. Text embedder: run {self.run.run_id} ({head} head, trained on " \
               f"{', '.join(self.run.config.datasets)})"


class EmbedTextRequest(BaseModel):
    text: str
    model: str | None = None


def service_names() -> dict[str, EmbedderSpec]:
    """Service name → audio embedder spec, for every embedder musictext has."""
    return {spec.served_as: spec for spec in embedder_specs().values()}


def load_models(root: DataRoot, runs: Mapping[str, str], device: torch.device) -> list[ServedModel]:
    """Every service name with its text embedder, loaded on ``device``: the run ``runs`` names for it (by
    service or embedder name, e.g. ``{"muq": "muq-all-pooled"}``), else the newest finished run of its model.

    A named run that cannot serve raises (the user asked for it); a model without a usable finished run is
    served as unavailable, with the reason.
    """
    names = service_names()
    chosen = {_service_name(key, names): run_id for key, run_id in runs.items()}
    return [_load(name, spec, root, chosen.get(name), device) for name, spec in names.items()]


def _service_name(key: str, names: Mapping[str, EmbedderSpec]) -> str:
    for name, spec in names.items():
        if key in (name, spec.name):
            return name
    raise InvalidInputError(f"--run {key}=…: no model is called {key!r}; the models are {', '.join(names)}")


def _load(name: str, spec: EmbedderSpec, root: DataRoot, run_id: str | None, device: torch.device) -> ServedModel:
    named = run_id is not None
    if run_id is None:
        try:
            run_id = newest_run(root, spec.name, spec.space)
        except FileNotFoundError:
            return ServedModel(name, spec, reason=f"no finished training run for {spec.name} in space {spec.space}")
    try:
        return _loaded(name, spec, trained_run(root, run_id, model=spec.name, space=spec.space), device)
    except (UserError, ValueError, OSError, RuntimeError) as error:  # a wrong run, or a damaged checkpoint or tokenizer
        if named and isinstance(error, UserError):  # the user asked for this run: say why it cannot serve
            raise
        if named:
            raise InvalidInputError(f"--run {name}={run_id} cannot serve: {error}") from None
        log.warning("%s is unavailable: run %s cannot serve: %s", name, run_id, error)
        return ServedModel(name, spec, reason=f"run {run_id} cannot serve: {error}")


def _loaded(name: str, spec: EmbedderSpec, run: TrainedRun, device: torch.device) -> ServedModel:
    embedder = load_text_embedder(run.model_dir, device=device)
    if embedder.config.audio_dim != spec.stored_dim:
        raise InvalidInputError(f"run {run.run_id} gives {embedder.config.audio_dim}-d vectors, but {name}'s audio "
                                f"vectors are {spec.stored_dim}-d; it was trained on other shards")
    return ServedModel(name, spec, run, embedder)


def create_app(models: Sequence[ServedModel], device: torch.device, *, max_batch: int = 64) -> FastAPI:
    """The FastAPI application answering Navidrome's contract with ``models``."""
    by_name = {model.name: model for model in models}
    worker = device_worker()
    encoders = {model.name: BatchEncoder(_encode_with(model.embedder, max_batch), worker, max_batch=max_batch)
                for model in models if model.embedder is not None}
    app = FastAPI(title="musictext text embeddings", description=__doc__, docs_url="/docs", redoc_url=None)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, f"the service failed to answer ({type(error).__name__}); its log has the details")

    @app.post("/embed_text")
    async def embed_text(request: Request) -> Response:
        query = _parse(await request.body())
        if isinstance(query, JSONResponse):
            return query
        name = query.model or DEFAULT_MODEL
        problem = _refusal(query.text, name, by_name)
        if problem is not None:
            return problem
        vector = await encoders[name].embed(query.text)
        return JSONResponse({"embedding": vector.tolist(), "model": name, "dimension": int(vector.shape[0]),
                             "is_stub": False, "run": by_name[name].run.run_id})

    @app.get("/models")
    async def list_models() -> list[dict[str, object]]:
        return [{"name": model.name, "dimension": model.spec.stored_dim,
                 "status": "available" if model.available else "unavailable", "description": model.description,
                 "audio_model": model.spec.name, "space": model.spec.space,
                 "run": model.run.run_id if model.run else None} for model in models]

    @app.get("/health")
    async def health() -> dict[str, object]:
        loaded = {model.name: {"run": model.run.run_id, "finished": model.run.finished, "head": model.run.config.head,
                               "dimension": model.spec.stored_dim, "device": str(device),
                               "batches": len(encoders[model.name].batches),
                               "largest_batch": max(encoders[model.name].batches, default=0)}
                  for model in models if model.run is not None}
        return {"status": "ok", "device": str(device), "loaded": loaded,
                "unavailable": sorted(model.name for model in models if not model.available)}

    return app


def _encode_with(embedder: TextEmbedder, max_batch: int) -> Encode:
    def encode(texts: Sequence[str]) -> np.ndarray:
        vectors = embedder.encode(list(texts), batch_size=max_batch)
        if not np.isfinite(vectors).all():
            raise FloatingPointError("the text embedder produced a vector that is not finite")
        return vectors

    return encode


def _parse(body: bytes) -> EmbedTextRequest | JSONResponse:
    """The request, whatever its content type says (``curl -d`` sends form encoding with a JSON body)."""
    try:
        return EmbedTextRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return _error(400, 'the body must be JSON like {"text": "slow piano", "model": "muq"} '
                           '(model is optional and defaults to muq)')


def _refusal(text: str, name: str, models: Mapping[str, ServedModel]) -> JSONResponse | None:
    if not text.strip():
        return _error(400, "text is empty; send the words to search for")
    if len(text) > MAX_TEXT_CHARS:
        return _error(400, f"text is {len(text)} characters long; at most {MAX_TEXT_CHARS} are accepted")
    if name not in models:
        return _error(400, f"unknown model {name!r}; the models are {', '.join(models)}")
    model = models[name]
    if not model.available:
        return _error(503, f"{name} is unavailable: {model.reason}. Train a text embedder with "
                           f"`musictext train --model {model.spec.name} --dataset DATASET`, then restart "
                           f"`musictext serve` (or name a run: --run {name}=RUN_ID)")
    return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)

