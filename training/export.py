"""A trained text embedder as a folder other tools load without musictext: sentence-transformers or ONNX.

``musictext export`` takes a run's best checkpoint (:func:`training.trainer.checkpoint_model_dir`) and writes

* ``sentence-transformers``: the ``pooled`` head rebuilt from sentence-transformers' own modules
  (Transformer → mean Pooling → Dense with the head's weights and no activation → Normalize), so
  ``SentenceTransformer(folder)`` loads it with no code of ours. The ``frames`` head's enrichment (quartiles,
  drift) has no sentence-transformers module, so it is refused with a pointer to ONNX;
* ``onnx``: ``model.onnx`` (token ids → unit vectors, either head, the enrichment inside the graph) and the
  tokenizer's files, run with ``onnxruntime`` and ``tokenizers`` alone.

Every export is checked before it is put in place: the folder is loaded the way a user would load it and its
vectors compared with musictext's on texts of different lengths (one longer than any ``max_length``) in one
padded batch; an export that disagrees beyond :data:`TOLERANCES` raises :class:`ExportMismatchError` and is
not written. Both formats carry the same model card (``README.md``) and its facts as ``musictext_export.json``:
which audio model's space the vectors live in, their size, the head, the encoder, the training data and the
best validation metrics.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import string
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embedders import embedder_spec
from store.atomic import temp_path_for
from store.errors import InvalidInputError
from store.layout import DataRoot
from training.config import read_config
from training.model import (
    CONFIG_FILE,
    ENCODER_DIR,
    EmbedderConfig,
    TextEmbedder,
    load_text_embedder,
    quiet_transformers,
)
from training.trainer import SELECTION_METRIC, checkpoint_model_dir

EXPORT_EXTRA = "pip install -e '.[export]'"
EXPORT_FILE = "musictext_export.json"
CARD_FILE = "README.md"
ONNX_FILE = "model.onnx"
ONNX_OUTPUT = "embedding"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""In the order of :meth:`_OnnxEmbedder.forward`; a tokenizer without token types leaves the last out."""
ONNX_OPSET = 17
"""Old enough for any onnxruntime since 1.14, new enough for every operator the encoders and heads use."""
TOLERANCES = {"sentence-transformers": 1e-5, "onnx": 1e-4}
"""Largest absolute difference of any vector component from musictext's own ``encode``. Measured on all-MiniLM-L6-v2:
0 for sentence-transformers (the same torch operations), below 1e-6 for ONNX (onnxruntime's kernels)."""
CHECK_TEXTS = (
    "piano",
    "A calm jazz song featuring piano.",
    "Metal music played on drums, with an angry feel: loud, fast and dark.",
    " ".join(["a dreamy ambient track with soft synth pads, distant vocals and slow drums"] * 30),
)
"""Lengths from one token to past any ``max_length`` (truncation), so the padded batch has real padding."""


class ExportError(InvalidInputError):
    """An export that cannot be made as asked; the message says what to do instead."""


class ExportMismatchError(RuntimeError):
    """The exported folder's vectors differ from musictext's by more than the format's tolerance."""


@dataclass(frozen=True)
class ExportCard:
    """What an exported text embedder is, read from its run: its folder's ``README.md`` and ``musictext_export.json``
    say it."""

    run_id: str
    audio_model: str
    service_name: str
    """The name Navidrome's embedding service (and ``musictext serve``) knows the audio model by."""
    space: str
    dimension: int
    head: str
    encoder: str
    encoder_trained: bool
    max_length: int
    datasets: tuple[str, ...]
    stage: int
    best_step: int
    best_metrics: dict[str, float]
    """Validation metrics of the best checkpoint (highest text→music Recall@10)."""


@dataclass(frozen=True)
class ExportResult:
    out: Path
    format: str
    card: ExportCard
    max_abs_diff: float
    """Measured on :data:`CHECK_TEXTS` against musictext's ``encode``."""
    tolerance: float


def find_run(root: DataRoot, run: str) -> Path:
    """``run`` as a user names it: a run id under ``root``'s ``runs/``, else a run directory."""
    for run_dir in (root.runs_dir() / run, Path(run)):
        if (run_dir / "config.json").is_file():
            return run_dir
    raise ExportError(f"no training run {run!r}: neither a run under {root.runs_dir()} nor a run directory; "
                      "`musictext train` makes one")


def read_card(run_dir: Path) -> ExportCard:
    """The card of ``run_dir``'s best checkpoint, from the run's config, its saved embedder and its metrics."""
    model_dir = checkpoint_model_dir(run_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        raise ExportError(f"run {run_dir.name} has no best checkpoint yet ({model_dir}); it is saved at the run's "
                          "first evaluation")
    config = read_config(run_dir / "config.json")
    embedder = embedder_config(model_dir)
    best = best_evaluation(run_dir / "metrics.jsonl")
    return ExportCard(
        run_id=config.run_id, audio_model=config.model, service_name=embedder_spec(config.model).served_as,
        space=config.space, dimension=embedder.audio_dim, head=embedder.head, encoder=embedder.encoder,
        encoder_trained=not config.freeze_encoder, max_length=embedder.max_length, datasets=config.datasets,
        stage=config.stage, best_step=int(best["step"]), best_metrics=best["val"],
    )


def embedder_config(model_dir: Path) -> EmbedderConfig:
    """A saved embedder's configuration, read without loading its weights (to refuse early)."""
    return EmbedderConfig(**json.loads((model_dir / CONFIG_FILE).read_text()))


def best_evaluation(metrics_path: Path) -> dict[str, Any]:
    """The metrics line of the best checkpoint: the highest :data:`SELECTION_METRIC`, the earliest on a tie (the
    trainer keeps a checkpoint only when it is strictly better). A line a killed run cut short is skipped."""
    lines = metrics_path.read_text().splitlines() if metrics_path.is_file() else []
    evaluations = [entry for entry in map(_json_or_none, lines) if entry and SELECTION_METRIC in entry.get("val", {})]
    if not evaluations:
        raise ExportError(f"{metrics_path} holds no evaluation; the best checkpoint's metrics are read from it")
    return max(evaluations, key=lambda entry: entry["val"][SELECTION_METRIC])


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def export_run_dir(run_dir: Path, format: str, out: Path, *, force: bool = False) -> ExportResult:
    """Export ``run_dir``'s best checkpoint as ``format`` (one of :data:`TOLERANCES`) into ``out``."""
    exporters: dict[str, Callable[..., ExportResult]] = {
        "sentence-transformers": export_sentence_transformers, "onnx": export_onnx}
    if format not in exporters:
        raise ExportError(f"unknown export format {format!r}; formats are {', '.join(exporters)}")
    card = read_card(run_dir)
    return exporters[format](checkpoint_model_dir(run_dir), out, card, force=force)


def export_sentence_transformers(model_dir: Path, out: Path, card: ExportCard, *, force: bool = False) -> ExportResult:
    """The ``pooled`` embedder in ``model_dir`` as a sentence-transformers folder; see the module docstring."""
    if embedder_config(model_dir).head != "pooled":
        raise ExportError("the frames head's enrichment (mean, quartile spread, drift of per-token frames) has no "
                          "sentence-transformers module; export it with --format onnx")
    check_out(out, force)
    with export_extra():
        from sentence_transformers import SentenceTransformer
    with quiet_transformers():
        embedder = load_text_embedder(model_dir)
        with staged(out) as folder:
            _sentence_transformer(model_dir, embedder).save(str(folder))
            exported = SentenceTransformer(str(folder), device="cpu").encode(list(CHECK_TEXTS))
            return _finish(folder, out, card, "sentence-transformers", _difference(exported, embedder))


def _sentence_transformer(model_dir: Path, embedder: TextEmbedder) -> Any:
    """Transformer → mean Pooling → Dense (the head's Linear, identity activation) → Normalize: what
    :class:`training.model.PooledHead` computes, in modules sentence-transformers saves and loads itself."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    config = embedder.config
    hidden = embedder.encoder.config.hidden_size
    linear = embedder.head.project
    modules = [
        Transformer(str(model_dir / ENCODER_DIR), max_seq_length=config.max_length),
        Pooling(hidden, "mean"),
        Dense(hidden, config.audio_dim, bias=True, activation_function=nn.Identity(),
              init_weight=linear.weight.detach().clone(), init_bias=linear.bias.detach().clone()),
        Normalize(),
    ]
    return SentenceTransformer(modules=modules, device="cpu", similarity_fn_name="cosine")


def export_onnx(model_dir: Path, out: Path, card: ExportCard, *, force: bool = False) -> ExportResult:
    """The embedder in ``model_dir`` (either head) as ``model.onnx`` plus its tokenizer; see :func:`_write_onnx`."""
    check_out(out, force)
    with export_extra():
        import onnxruntime
        import tokenizers
    with quiet_transformers():
        embedder = load_text_embedder(model_dir)
    if not getattr(embedder.tokenizer, "is_fast", False):
        raise ExportError(f"the encoder's tokenizer ({type(embedder.tokenizer).__name__}) has no tokenizer.json, "
                          "which the ONNX folder needs to run without transformers")
    with staged(out) as folder:
        _write_onnx(embedder, folder)
        session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        batched = onnx_encode(session, tokenizer, CHECK_TEXTS)
        alone = np.concatenate([onnx_encode(session, tokenizer, [text]) for text in CHECK_TEXTS])
        difference = max(_difference(batched, embedder), _difference(alone, embedder))
        return _finish(folder, out, card, "onnx", difference)


def _write_onnx(embedder: TextEmbedder, folder: Path) -> None:
    """``model.onnx`` and the tokenizer, its truncation to ``max_length`` and its padding set in ``tokenizer.json``.

    The graph comes from the TorchScript exporter (``dynamo=False``): the torch.export-based one cannot capture
    the frames head, because :func:`training.model.masked_enrich` refuses an empty row with a data-dependent
    Python ``if`` (torch.export stops there), whereas tracing records that check as the constant it always is
    here (a tokenizer emits at least its special tokens), and sort, quartile interpolation and gathers become
    TopK and Gather over dynamic batch and sequence axes. One exporter serves both heads, and it is about four
    times faster on all-MiniLM-L6-v2. Its tracer warnings are silenced because the onnxruntime check, not the
    trace, is what proves the graph. The example batch is padded, so that encoder code which decides at trace time
    whether a batch needs its attention mask is traced on the path that honours it (all-MiniLM-L6-v2 under
    transformers 5 traces the same graph either way; the check runs padded batches whatever the encoder).
    """
    tokenizer = embedder.tokenizer
    names = [name for name in ONNX_INPUTS if name in tokenizer.model_input_names]
    example = tokenizer(["a short text", "a longer text, which pads the short one"], padding=True, return_tensors="pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        torch.onnx.export(
            _OnnxEmbedder(embedder), tuple(example[name] for name in names), str(folder / ONNX_FILE),
            input_names=names, output_names=[ONNX_OUTPUT], opset_version=ONNX_OPSET, dynamo=False,
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in names}, ONNX_OUTPUT: {0: "batch"}},
        )
    tokenizer.model_max_length = embedder.config.max_length
    tokenizer.backend_tokenizer.enable_truncation(embedder.config.max_length)
    tokenizer.backend_tokenizer.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    tokenizer.save_pretrained(folder)


class _OnnxEmbedder(nn.Module):
    """:meth:`TextEmbedder.forward` from token tensors: tokenising stays outside the graph, in the user's tokenizer."""

    def __init__(self, embedder: TextEmbedder) -> None:
        super().__init__()
        self.encoder = embedder.encoder
        self.head = embedder.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.head(self.encoder(**inputs).last_hidden_state, attention_mask)


def onnx_encode(session: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Texts → float32 unit vectors with an exported folder's ``onnxruntime`` session and ``tokenizers`` tokenizer
    (the way :data:`ONNX_USAGE` tells a user to run it)."""
    encodings = tokenizer.encode_batch(list(texts))
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    feeds = {node.name: np.array([getattr(e, fields[node.name]) for e in encodings], dtype=np.int64)
             for node in session.get_inputs()}
    return session.run([ONNX_OUTPUT], feeds)[0]


def _difference(exported: np.ndarray, embedder: TextEmbedder) -> float:
    return float(np.abs(np.asarray(exported, dtype=np.float32) - embedder.encode(list(CHECK_TEXTS))).max())


def _finish(folder: Path, out: Path, card: ExportCard, format: str, difference: float) -> ExportResult:
    """Refuse a mismatching export, else write its card; the folder is swapped into ``out`` by :func:`staged`."""
    tolerance = TOLERANCES[format]
    if not difference <= tolerance:
        raise ExportMismatchError(f"the {format} export differs from musictext's vectors by {difference:.3g} "
                                  f"(tolerance {tolerance:g}); nothing was written")
    result = ExportResult(out, format, card, difference, tolerance)
    write_card(folder, result)
    return result


# --- the output folder --------------------------------------------------------------------------------------


def check_out(out: Path, force: bool) -> None:
    """Refuse to replace anything but an empty folder or, with ``force``, an earlier export: ``--force`` on a
    mistyped ``--out`` must not delete someone's directory."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not force:
        raise ExportError(f"{out} exists and is not empty; choose another --out, or pass --force to replace an "
                          "earlier export")
    if not (out / EXPORT_FILE).is_file():
        raise ExportError(f"{out} is not an earlier export (it has no {EXPORT_FILE}); --force replaces only those, "
                          "so choose another --out")


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` to build the export in, renamed into place when the block succeeds: a
    failed, refused or killed export leaves ``out`` as it was (an earlier export is removed only after the new
    one took its name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = temp_path_for(out)
    folder.mkdir()
    try:
        yield folder
        old = temp_path_for(out)
        if out.exists():
            out.rename(old)
        folder.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def export_extra() -> Iterator[None]:
    """A missing package of the export extra becomes the command that installs it."""
    try:
        yield
    except ModuleNotFoundError as error:
        raise ExportError(f"exporting needs the export extra ({error.name} is not installed): {EXPORT_EXTRA}") from None


# --- the model card -----------------------------------------------------------------------------------------

CARD = string.Template("""# Text embedder into $audio_model's audio space ($format)

Turns a text into a float32 unit vector of **$dimension** dimensions in the space of the **$audio_model** audio
embedder's stored vectors (space `$space`; Navidrome's `/embed_text` and `musictext serve` name this model
`$service_name`), so a text can be matched against music by cosine similarity. Exported by musictext from
training run `$run_id`.

| | |
|---|---|
| audio model | `$audio_model` (Navidrome: `$service_name`) |
| space | `$space` |
| dimension | $dimension |
| head | `$head` |
| encoder | `$encoder` ($encoder_state), at most $max_length tokens |
| training data | $datasets (stage $stage) |
| best checkpoint | step $best_step, chosen by validation text→music Recall@10 |
| check | max abs difference from musictext's vectors $max_abs_diff (tolerance $tolerance) on $texts texts |

## Validation metrics of the best checkpoint

| metric | value |
|---|---|
$metrics

## Usage

$usage

The vectors have unit norm: the cosine similarity to a stored audio vector is the dot product with that vector
normalised. Query Navidrome-style vectors (model `$service_name`, $dimension dimensions) with a cosine search,
e.g. Milvus `metric_type="COSINE"`; to answer Navidrome's `POST /embed_text`, return
`{"embedding": vector.tolist(), "model": "$service_name", "dimension": $dimension}`.
""")

USAGE = {
    "sentence-transformers": string.Template("""```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/this/folder")
vectors = model.encode(["a calm jazz song featuring piano", "dark techno"])  # float32 [2, $dimension], unit norm
```"""),
    "onnx": string.Template("""Needs only `pip install onnxruntime tokenizers numpy`. `tokenizer.json` already
truncates to $max_length tokens and pads a batch to its longest text.

```python
import numpy as np
import onnxruntime
from tokenizers import Tokenizer

folder = "path/to/this/folder"
tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
session = onnxruntime.InferenceSession(f"{folder}/$onnx_file", providers=["CPUExecutionProvider"])
encodings = tokenizer.encode_batch(["a calm jazz song featuring piano", "dark techno"])
fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
feeds = {node.name: np.array([getattr(e, fields[node.name]) for e in encodings], dtype=np.int64)
         for node in session.get_inputs()}
vectors = session.run(["$onnx_output"], feeds)[0]  # float32 [2, $dimension], unit norm
```

`transformers`' `AutoTokenizer.from_pretrained(folder)` works too (`padding=True, truncation=True,
return_tensors="np"`; feed the inputs the session lists)."""),
}


def write_card(folder: Path, result: ExportResult) -> None:
    """``README.md`` for people and ``musictext_export.json`` for programs, from the same facts, for either format."""
    card = result.card
    facts = {**asdict(card), "format": result.format, "datasets": list(card.datasets), "similarity": "cosine",
             "normalized": True, "check": {"texts": len(CHECK_TEXTS), "max_abs_diff": result.max_abs_diff,
                                           "tolerance": result.tolerance}}
    if result.format == "onnx":
        facts["onnx"] = {"file": ONNX_FILE, "output": ONNX_OUTPUT, "opset": ONNX_OPSET, "tokenizer": "tokenizer.json"}
    (folder / EXPORT_FILE).write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    values = {**asdict(card), "format": result.format, "datasets": ", ".join(card.datasets),
              "encoder_state": "fine-tuned" if card.encoder_trained else "frozen", "texts": len(CHECK_TEXTS),
              "max_abs_diff": f"{result.max_abs_diff:.2g}", "tolerance": f"{result.tolerance:g}",
              "onnx_file": ONNX_FILE, "onnx_output": ONNX_OUTPUT,
              "metrics": "\n".join(f"| {name} | {value:g} |" for name, value in sorted(card.best_metrics.items()))}
    values["usage"] = USAGE[result.format].substitute(values)
    (folder / CARD_FILE).write_text(CARD.substitute(values))
