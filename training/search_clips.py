"""``musictext search``: a text through a trained text embedder, then the nearest clips of one audio model.

The text embedder is a run's best checkpoint: the one named, or the newest run trained for the model
(its ``config.json`` says which model). Captions and clip paths come from the manifests, so a hit can be
read and listened to.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embedders import embedder_spec
from store.layout import DataRoot
from store.manifest import ManifestRow, read_manifest
from training.evaluate import run_config
from training.model import load_text_embedder
from training.search import Hit, model_shard_dirs, search
from training.trainer import checkpoint_model_dir


@dataclass(frozen=True)
class ClipHit:
    item_id: str
    score: float
    caption: str
    clip: Path


@dataclass(frozen=True)
class SearchResult:
    run_id: str
    hits: list[ClipHit]

    def copy_clips(self, folder: Path) -> list[Path]:
        """Copy the hits' clips into ``folder`` as ``<rank>-<clip name>``, to listen to them in order."""
        folder.mkdir(parents=True, exist_ok=True)
        copied = []
        for rank, hit in enumerate(self.hits, 1):
            if hit.clip.is_file():
                copied.append(Path(shutil.copy2(hit.clip, folder / f"{rank:02d}-{hit.clip.name}")))
        return copied


def newest_run(root: DataRoot, model: str, space: str) -> str:
    """The most recently trained run for ``model`` in ``space`` that has a best checkpoint."""
    finished = [path.parent for path in root.runs_dir().glob("*/config.json")
                if checkpoint_model_dir(path.parent).is_dir()]
    configs = {run: run_config(root, run.name) for run in finished}
    runs = [run for run, config in configs.items() if (config.model, config.space) == (model, space)]
    if not runs:
        raise FileNotFoundError(f"no trained text embedder for {model} in space {space} under {root.runs_dir()}; "
                                f"run `musictext train --model {model}` first")
    return max(runs, key=lambda run: checkpoint_model_dir(run).stat().st_mtime).name


def search_clips(root: DataRoot, text: str, model: str, *, k: int = 10, datasets: Sequence[str] | None = None,
                 run_id: str | None = None) -> SearchResult:
    space = embedder_spec(model).space
    run_id = run_id or newest_run(root, model, space)
    config = run_config(root, run_id)
    if (config.model, config.space) != (model, space):
        raise ValueError(f"run {run_id} embeds text into {config.model}'s vectors of space {config.space or '(none)'}, "
                         f"not {model}'s of space {space}; train a text embedder for them")
    embedder = load_text_embedder(checkpoint_model_dir(root.runs_dir() / run_id))
    hits = search(embedder.encode([text])[0], model_shard_dirs(root, model, space, datasets), k=k, space=space)
    rows = {row.item_id: row for name in {hit.dataset for hit in hits} for row in read_manifest(root.manifest(name))}
    return SearchResult(run_id, [_clip_hit(root, hit, rows.get(hit.item_id)) for hit in hits])


def _clip_hit(root: DataRoot, hit: Hit, row: ManifestRow | None) -> ClipHit:
    caption = (row.captions[0] if row.captions else ", ".join(row.tags)) if row else ""
    return ClipHit(hit.item_id, hit.score, caption, root.clip_path(hit.dataset, hit.item_id))
