"""``musictext search``: a text through a trained text embedder, then the nearest clips of one audio model.

The text embedder is a run's best checkpoint: the one named, or the newest finished run trained for the
model (:mod:`training.runs`). Captions and clip paths come from the manifests, so a hit can be
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
from training.model import load_text_embedder
from training.runs import newest_run, trained_run
from training.search import Hit, model_shard_dirs, search_collection


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
    methods: list[str]
    """How each dataset was searched (FAISS index or exact), from :func:`training.search.search_collection`."""

    def copy_clips(self, folder: Path) -> list[Path]:
        """Copy the hits' clips into ``folder`` as ``<rank>-<clip name>``, to listen to them in order."""
        folder.mkdir(parents=True, exist_ok=True)
        copied = []
        for rank, hit in enumerate(self.hits, 1):
            if hit.clip.is_file():
                copied.append(Path(shutil.copy2(hit.clip, folder / f"{rank:02d}-{hit.clip.name}")))
        return copied


def search_clips(root: DataRoot, text: str, model: str, *, k: int = 10, datasets: Sequence[str] | None = None,
                 run_id: str | None = None) -> SearchResult:
    space = embedder_spec(model).space
    run = trained_run(root, run_id or newest_run(root, model, space), model=model, space=space)
    embedder = load_text_embedder(run.model_dir)
    found = search_collection(embedder.encode([text])[0], model_shard_dirs(root, model, space, datasets), k=k,
                              space=space)
    hits = found.hits
    rows = {row.item_id: row for name in {hit.dataset for hit in hits} for row in read_manifest(root.manifest(name))}
    return SearchResult(run.run_id, [_clip_hit(root, hit, rows.get(hit.item_id)) for hit in hits], found.methods)


def _clip_hit(root: DataRoot, hit: Hit, row: ManifestRow | None) -> ClipHit:
    caption = (row.captions[0] if row.captions else ", ".join(row.tags)) if row else ""
    return ClipHit(hit.item_id, hit.score, caption, root.clip_path(hit.dataset, hit.item_id))
