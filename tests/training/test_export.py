"""``musictext export`` on real trained runs (one per head, on the small corpus with the real all-MiniLM-L6-v2):
the exported folders give musictext's vectors, load in a Python that cannot import musictext (the ONNX one
without torch or transformers either, through the very snippet of its model card), carry a card with the run's
facts, never half-replace an output folder, and the command line refuses mistakes in one line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import typer
from corpus import DATASETS, DIM, MODEL, SPACE, build_corpus
from import_blocker import without
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer
from typer.testing import CliRunner

from flows.export_cli import ExportFormat, export_run
from store.layout import DataRoot
from training import export
from training.config import TrainConfig
from training.export import ExportError, ExportMismatchError, ExportResult
from training.model import CONFIG_FILE, load_text_embedder
from training.trainer import checkpoint_model_dir, train

REPO = Path(__file__).resolve().parents[2]
MAX_LENGTH = 32
TEXTS = [
    "jazz",
    "Reggae music played on banjo, with a playful feel.",
    "a dark metal song " * 20,  # past MAX_LENGTH: truncated alike everywhere
    "Ein ruhiges Klavierstück — café music?",
    "",  # the special tokens alone
]
EXPORTS = {("pooled", "sentence-transformers"), ("pooled", "onnx"), ("frames", "onnx")}
MUSICTEXT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
SAVE = """
import numpy
assert not [name for name in sys.modules if name.partition(".")[0] in BLOCKED], "a blocked package was loaded"
numpy.save(sys.argv[1], vectors)
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    """A data root with two finished runs, ``toy-pooled`` and ``toy-frames``, four optimizer steps each."""
    corpus = build_corpus(tmp_path_factory.mktemp("data"), tracks=8)
    for head in ("pooled", "frames"):
        config = TrainConfig(model=MODEL, space=SPACE, datasets=DATASETS, run_id=f"toy-{head}", head=head,
                             freeze_encoder=True, batch_size=8, lr=3e-3, warmup_steps=1, max_steps=4, eval_every=2,
                             checkpoint_every=2, patience=None, max_length=MAX_LENGTH, device="cpu")
        train(config, corpus.root, show_progress=False)
    return corpus.root


@pytest.fixture(scope="module")
def exports(root: DataRoot, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], ExportResult]:
    folder = tmp_path_factory.mktemp("exports")
    return {(head, fmt): export.export_run_dir(root.runs_dir() / f"toy-{head}", fmt, folder / f"{head}-{fmt}")
            for head, fmt in sorted(EXPORTS)}


def _musictext(root: DataRoot, head: str, texts: list[str]) -> np.ndarray:
    return load_text_embedder(checkpoint_model_dir(root.runs_dir() / f"toy-{head}")).encode(texts)


# --- the exported vectors -----------------------------------------------------------------------------------


def test_the_sentence_transformers_folder_gives_musictext_vectors(
        root: DataRoot, exports: dict[tuple[str, str], ExportResult]) -> None:
    result = exports["pooled", "sentence-transformers"]
    vectors = SentenceTransformer(str(result.out), device="cpu").encode(TEXTS)

    assert vectors.shape == (len(TEXTS), DIM) and vectors.dtype == np.float32
    assert np.abs(vectors - _musictext(root, "pooled", TEXTS)).max() <= 1e-5
    assert result.max_abs_diff <= result.tolerance == 1e-5


@pytest.mark.parametrize("head", ["pooled", "frames"])
def test_the_onnx_folder_gives_musictext_vectors_for_a_padded_batch(
        root: DataRoot, exports: dict[tuple[str, str], ExportResult], head: str) -> None:
    """Through transformers' tokenizer, the card's other way; the ``tokenizers`` way runs without musictext below."""
    result = exports[head, "onnx"]
    session = onnxruntime.InferenceSession(str(result.out / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = AutoTokenizer.from_pretrained(result.out)(TEXTS, padding=True, truncation=True, return_tensors="np")
    assert batch["attention_mask"].shape[1] == MAX_LENGTH and batch["attention_mask"][0].sum() < MAX_LENGTH
    feeds = {node.name: batch[node.name].astype(np.int64) for node in session.get_inputs()}

    vectors = session.run(["embedding"], feeds)[0]

    assert vectors.shape == (len(TEXTS), DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors - _musictext(root, head, TEXTS)).max() <= 1e-4
    assert result.max_abs_diff <= result.tolerance == 1e-4


@pytest.mark.parametrize(("head", "fmt", "blocked"), [
    ("pooled", "sentence-transformers", MUSICTEXT),
    ("pooled", "onnx", [*MUSICTEXT, "torch", "transformers", "sentence_transformers"]),
    ("frames", "onnx", [*MUSICTEXT, "torch", "transformers", "sentence_transformers"]),
])
def test_the_model_cards_snippet_runs_where_musictext_cannot_be_imported(
        root: DataRoot, exports: dict[tuple[str, str], ExportResult], tmp_path: Path, head: str, fmt: str,
        blocked: list[str]) -> None:
    """The editable install puts musictext on every path of this venv, so the subprocess removes it (and for
    ONNX torch and transformers) with an import hook, checks they are gone, then runs the card's usage."""
    folder = exports[head, fmt].out
    snippet = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    code = without(blocked, snippet.replace("path/to/this/folder", str(folder)) + SAVE)
    saved = tmp_path / "vectors.npy"

    subprocess.run([sys.executable, "-I", "-c", code, str(saved)], cwd=tmp_path, check=True,
                   timeout=300)

    texts = re.search(r"encode(?:_batch)?\((\[.*?\])\)", snippet).group(1)
    expected = _musictext(root, head, json.loads(texts))
    assert np.abs(np.load(saved) - expected).max() <= export.TOLERANCES[fmt]


# --- the model card -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "fmt"), sorted(EXPORTS))
def test_the_card_states_the_runs_facts_and_best_validation_metrics(
        root: DataRoot, exports: dict[tuple[str, str], ExportResult], head: str, fmt: str) -> None:
    out = exports[head, fmt].out
    lines = [json.loads(line) for line in (root.runs_dir() / f"toy-{head}" / "metrics.jsonl").read_text().splitlines()]
    best = max(lines, key=lambda line: line["val"]["t2m_R@10"])
    facts = json.loads((out / "musictext_export.json").read_text())
    card = (out / "README.md").read_text()

    assert {key: facts[key] for key in ("format", "run_id", "audio_model", "space", "dimension", "head",
                                        "datasets", "best_step", "best_metrics", "max_length")} == {
        "format": fmt, "run_id": f"toy-{head}", "audio_model": MODEL, "space": SPACE, "dimension": DIM, "head": head,
        "datasets": list(DATASETS), "best_step": best["step"], "best_metrics": best["val"], "max_length": MAX_LENGTH}
    assert facts["check"]["max_abs_diff"] <= facts["check"]["tolerance"] == export.TOLERANCES[fmt]
    for fact in (f"**{DIM}** dimensions", f"**{MODEL}** audio", f"`{SPACE}`", f"| head | `{head}` |",
                 f"step {best['step']}", f"| t2m_R@10 | {best['val']['t2m_R@10']:g} |", "captioned, tagged, bench",
                 "sentence-transformers/all-MiniLM-L6-v2", "unit norm", "COSINE"):
        assert fact in card


def test_a_music2latent_card_gives_navidromes_name_latent(root: DataRoot, tmp_path: Path) -> None:
    """The card needs no weights: the run's config, the saved embedder's config and its metrics."""
    source, run_dir = root.runs_dir() / "toy-pooled", tmp_path / "m2l"
    (checkpoint_model_dir(run_dir)).mkdir(parents=True)
    shutil.copy(checkpoint_model_dir(source) / CONFIG_FILE, checkpoint_model_dir(run_dir) / CONFIG_FILE)
    shutil.copy(source / "metrics.jsonl", run_dir / "metrics.jsonl")
    config = json.loads((source / "config.json").read_text()) | {"model": "music2latent", "run_id": "m2l"}
    (run_dir / "config.json").write_text(json.dumps(config))

    card = export.read_card(run_dir)
    export.write_card(tmp_path, ExportResult(tmp_path / "out", "onnx", card, 1e-7, 1e-4))

    assert (card.audio_model, card.service_name) == ("music2latent", "latent")
    assert "Navidrome: `latent`" in (tmp_path / "README.md").read_text()
    assert json.loads((tmp_path / "musictext_export.json").read_text())["service_name"] == "latent"


def test_the_best_evaluation_is_the_earliest_highest_recall_and_a_cut_line_is_skipped(tmp_path: Path) -> None:
    lines = [{"step": step, "val": {"t2m_R@10": recall}} for step, recall in ((10, 0.5), (20, 0.8), (30, 0.8))]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 40, "val": {"t2m_R@10": 0.9')

    assert export.best_evaluation(path)["step"] == 20
    with pytest.raises(ExportError, match="holds no evaluation"):
        export.best_evaluation(tmp_path / "missing.jsonl")


# --- the output folder --------------------------------------------------------------------------------------


def test_the_frames_head_is_refused_for_sentence_transformers_before_anything_is_written(
        root: DataRoot, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--format onnx"):
        export.export_run_dir(root.runs_dir() / "toy-frames", "sentence-transformers", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_is_replaced_only_when_it_is_an_earlier_export_and_force_is_given(
        root: DataRoot, exports: dict[tuple[str, str], ExportResult], tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    shutil.copytree(exports["pooled", "sentence-transformers"].out, earlier)
    (earlier / "stale.txt").write_text("from an earlier export")
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("someone's work")
    run_dir = root.runs_dir() / "toy-frames"

    with pytest.raises(ExportError, match="--force"):
        export.export_run_dir(run_dir, "onnx", earlier)
    with pytest.raises(ExportError, match="not an earlier export"):
        export.export_run_dir(run_dir, "onnx", unrelated, force=True)
    result = export.export_run_dir(run_dir, "onnx", earlier, force=True)

    assert sorted(path.name for path in earlier.iterdir()) == [
        "README.md", "model.onnx", "musictext_export.json", "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((earlier / "musictext_export.json").read_text())["head"] == "frames" == result.card.head
    assert (unrelated / "notes.txt").read_text() == "someone's work"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["earlier", "unrelated"]  # no temporary left


def test_an_export_that_misses_its_tolerance_writes_nothing(
        root: DataRoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(export.TOLERANCES, "onnx", 0.0)  # onnxruntime's kernels always differ a little

    with pytest.raises(ExportMismatchError, match="nothing was written"):
        export.export_run_dir(root.runs_dir() / "toy-pooled", "onnx", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# --- the command line ---------------------------------------------------------------------------------------


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("MUSICTEXT_CONFIG", "/dev/null")
    app = typer.Typer()
    app.command()(export_run)
    return app


def test_the_command_exports_a_run_named_by_its_directory(root: DataRoot, cli: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "frames"

    result = CliRunner().invoke(cli, [str(root.runs_dir() / "toy-frames"), "--format", "onnx", "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert f"exported run toy-frames (frames head, {DIM}-d vectors of {MODEL}) as onnx to {out}" in result.output
    assert (out / "model.onnx").is_file()


def _no_checkpoint(root: DataRoot) -> str:
    run_dir = root.runs_dir() / "untrained"
    run_dir.mkdir(exist_ok=True)
    shutil.copy(root.runs_dir() / "toy-pooled" / "config.json", run_dir / "config.json")
    return "untrained"


@pytest.mark.parametrize(("case", "message"), [
    ("unknown run", "no training run 'nothing-here'"),
    ("no best checkpoint", "run untrained has no best checkpoint yet"),
    ("frames as sentence-transformers", "export it with --format onnx"),
    ("out not empty", "exists and is not empty"),
    ("export extra missing", "pip install -e '.[export]'"),
])
def test_the_command_refuses_mistakes_in_one_line_with_exit_2(
        root: DataRoot, cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
        message: str) -> None:
    run, fmt, out = "toy-pooled", "onnx", tmp_path / "out"
    if case == "unknown run":
        run = "nothing-here"
    elif case == "no best checkpoint":
        run = _no_checkpoint(root)
    elif case == "frames as sentence-transformers":
        run, fmt = "toy-frames", "sentence-transformers"
    elif case == "out not empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an install without the extra finds

    result = CliRunner().invoke(cli, [run, "--format", fmt, "--out", str(out), "--root", str(root.path)])

    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_the_command_offers_the_formats_of_the_exporter_and_starts_without_torch() -> None:
    assert {choice.value for choice in ExportFormat} == set(export.TOLERANCES)
    code = "import sys, flows.export_cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 0
