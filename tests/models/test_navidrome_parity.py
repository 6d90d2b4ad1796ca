"""Parity with Navidrome: every model's stored vector against an independent reading of shared/navidrome.md.

Sixteen source files — 5 s, 30 s, 2 min and 5 min, mono and stereo, 44.1 and 48 kHz, 24-bit FLAC of music
whose notes change every two seconds (so long tracks have frames that differ) — go the production way: the
preprocess stage's ``write_clip`` makes the canonical 44.1 kHz 16-bit clip of the whole file, and the embed
stage's ``embed_unit`` writes a shard. The reference (``navidrome_reference``, written from the page alone)
embeds the same file decoded at its own rate, as Navidrome's ``embed_audio_tensor`` would. Each stored vector
must be within cosine 0.999 of the reference's, and the shard's frame count must be the reference's ``T`` and
the count the page's rules give for that length. Models are tiny random-weight instances of the real classes.

``-s`` prints the cosine of every input: the parity figures of the README.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch", reason="model tests run in .venv-models (the models extra)")

import navidrome_reference as reference  # noqa: E402
from tiny_muq import write_repos  # noqa: E402
from tiny_weights import REDUCED_UNET, write_music2latent_checkpoint, write_snapshot  # noqa: E402

from embedders import embedder_spec  # noqa: E402
from flows.work import embed_unit  # noqa: E402
from processors.clip import write_clip  # noqa: E402
from store.layout import DataRoot  # noqa: E402
from store.settings import load_settings  # noqa: E402
from store.shards import open_shard  # noqa: E402
from store.status import read_status  # noqa: E402

DATASET = "parity"
TOLERANCE = 0.999
LENGTHS_S = (5, 30, 120, 300)
LAYOUTS = ((1, 44_100), (2, 44_100), (1, 48_000), (2, 48_000))
EXPECTED_T = {
    # One 120 s window up to 120 s; then starts 0, 15, …, 180 s.
    "muq": {5: 1, 30: 1, 120: 1, 300: 13},
    # One 30 s window up to 30 s; then starts 0, 5, …, 90 s and 0, 5, …, 270 s.
    "mert": {5: 1, 30: 1, 120: 19, 300: 55},
    # (N − 1536) // 4096 latent frames of the 44.1 kHz waveform.
    "music2latent": {5: 53, 30: 322, 120: 1291, 300: 3229},
}


@dataclass(frozen=True)
class Source:
    item_id: str
    path: Path
    seconds: int
    channels: int
    rate: int

    @property
    def label(self) -> str:
        return f"{self.seconds:>3} s {'stereo' if self.channels == 2 else 'mono  '} {self.rate / 1000:g} kHz"


def music(seconds: int, channels: int, rate: int, seed: int) -> np.ndarray:
    """``[channels, N]``: a note every two seconds with two overtones, the channels detuned apart, and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * rate) / rate
    notes = 110.0 * 2 ** (rng.integers(0, 36, size=seconds // 2 + 1) / 12)
    pitch = notes[(t // 2).astype(int)]
    rows = [0.3 * np.sin(2 * np.pi * pitch * (1 + 0.003 * side) * t) + 0.1 * np.sin(2 * np.pi * 3 * pitch * t)
            + 0.05 * np.sin(2 * np.pi * 5 * pitch * t) * (t % 2 < 1) + 0.02 * rng.standard_normal(t.size)
            for side in range(channels)]
    return np.stack(rows).astype(np.float32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Source]:
    folder = tmp_path_factory.mktemp("sources")
    made = []
    for seed, (seconds, (channels, rate)) in enumerate((s, layout) for s in LENGTHS_S for layout in LAYOUTS):
        path = folder / f"{seconds}s-{channels}ch-{rate}.flac"
        sf.write(path, music(seconds, channels, rate, seed).T, rate, subtype="PCM_24")
        made.append(Source(f"{DATASET}:{path.name}", path, seconds, channels, rate))
    return made


@pytest.fixture(scope="module")
def root(sources: list[Source], tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    """The canonical clips of the whole files, as the preprocess stage writes them."""
    data = DataRoot(tmp_path_factory.mktemp("data"))
    for source in sources:
        write_clip(source.path, data.clip_path(DATASET, source.item_id), start_s=None, end_s=None,
                   settings=load_settings())
    return data


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    write_repos(folder / "muq")
    write_snapshot(folder / "mert")
    with reference.unet_globals(REDUCED_UNET):
        write_music2latent_checkpoint(folder / "music2latent")
    return {"muq": folder / "muq", "mert": folder / "mert", "music2latent": folder / "music2latent"}


@pytest.fixture(autouse=True)
def reduced_unet() -> Iterator[None]:
    with reference.unet_globals(REDUCED_UNET):
        yield


def stored(root: DataRoot, model: str, sources: list[Source], weights: Path, precision: str = "reference"
           ) -> dict[str, tuple[np.ndarray, int]]:
    """Embed every source's clip through the embed stage's unit into a shard; ``(vector, T)`` per item."""
    settings = load_settings(embed_workers=1, embed_precision=precision)
    result = embed_unit(DATASET, model, [source.item_id for source in sources], root, settings, weights=str(weights))
    assert result.failed == 0, [record.detail for record in result.records if not record.is_ok]
    shard = open_shard(root.path / result.shard)
    assert shard.path.parent == root.shard_dir(model, DATASET, "navidrome-2025.11")
    assert (shard.space, shard.attrs["precision"]) == ("navidrome-2025.11", precision)
    return {item_id: (vector, int(frames)) for item_id, vector, frames
            in zip(shard.item_ids, shard.embeddings(), shard.frames(), strict=True)}


def decoded(source: Source) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(source.path, dtype="float32", always_2d=True)
    return samples.T, rate


def compare(model: str, sources: list[Source], ours: dict[str, tuple[np.ndarray, int]], theirs: dict[str, tuple]
            ) -> list[str]:
    """The parity table for ``-s``, and what falls outside the tolerance or miscounts frames."""
    failures = []
    print(f"\n{model}: cosine to the reference (tolerance {TOLERANCE})")
    for source in sources:
        vector, frames = ours[source.item_id]
        expected, expected_frames = theirs[source.item_id]
        expected = np.asarray(expected, dtype=np.float64)
        cosine = float(vector @ expected / (np.linalg.norm(vector) * np.linalg.norm(expected)))
        print(f"  {source.label}: cos {cosine:.6f}  T {frames} (reference {expected_frames})")
        if cosine < TOLERANCE or frames != expected_frames:
            failures.append(f"{source.label}: cos {cosine:.6f}, T {frames} vs {expected_frames}")
    return failures


def check_counts(model: str, sources: list[Source], ours: dict[str, tuple[np.ndarray, int]]) -> None:
    counts = {source.seconds: ours[source.item_id][1] for source in sources}
    assert counts == EXPECTED_T[model]


def test_muq_stores_navidromes_vectors(root: DataRoot, sources: list[Source], weights: dict[str, Path]) -> None:
    ours = stored(root, "muq", sources, weights["muq"])
    model = reference.load_muq(weights["muq"])
    theirs = {source.item_id: reference.muq_reference(model, *decoded(source)) for source in sources}
    assert compare("muq", sources, ours, theirs) == []
    check_counts("muq", sources, ours)


def test_mert_stores_navidromes_vectors(root: DataRoot, sources: list[Source], weights: dict[str, Path]) -> None:
    ours = stored(root, "mert", sources, weights["mert"])
    model, extractor = reference.load_mert(weights["mert"])
    theirs = {source.item_id: reference.mert_reference(model, extractor, *decoded(source)) for source in sources}
    assert compare("mert", sources, ours, theirs) == []
    check_counts("mert", sources, ours)


def test_music2latent_stores_navidromes_vectors(
    root: DataRoot, sources: list[Source], weights: dict[str, Path], tmp_path: Path
) -> None:
    ours = stored(root, "music2latent", sources, weights["music2latent"])
    codec = reference.load_music2latent(weights["music2latent"] / "music2latent.pt", REDUCED_UNET)
    theirs = {source.item_id: reference.music2latent_reference(codec, *decoded(source), tmp_path)
              for source in sources}
    assert compare("music2latent", sources, ours, theirs) == []
    check_counts("music2latent", sources, ours)


def test_music2latent_stereo_stores_the_library_jobs_vectors_and_refuses_mono(
    root: DataRoot, sources: list[Source], weights: dict[str, Path]
) -> None:
    """The library job encodes the file at its own rate: its vectors are matched for 44.1 kHz stereo files;
    a mono file fails there, and is recorded as failing here."""
    stereo = [source for source in sources if source.channels == 2 and source.rate == 44_100]
    ours = stored(root, "music2latent-stereo", stereo, weights["music2latent"])
    codec = reference.load_music2latent(weights["music2latent"] / "music2latent.pt", REDUCED_UNET)
    theirs = {source.item_id: reference.music2latent_stereo_reference(codec, source.path) for source in stereo}
    assert compare("music2latent-stereo", stereo, ours, theirs) == []

    mono = next(source for source in sources if source.channels == 1 and source.seconds == 5)
    result = embed_unit(DATASET, "music2latent-stereo", [mono.item_id], root, load_settings(embed_workers=0),
                        weights=str(weights["music2latent"]))
    (record,) = result.records
    assert (record.reason, record.failure_class) == ("not_stereo", "permanent")
    assert "music2latent" in record.detail and "mono" in record.detail
    space = embedder_spec("music2latent-stereo").space
    recorded = read_status(root.embed_status_dir("music2latent-stereo", DATASET, space))
    assert recorded[mono.item_id].reason == "not_stereo"


@pytest.mark.parametrize("model", ["muq", "mert", "music2latent"])
def test_bf16_autocast_stays_within_the_tolerance_on_a_cpu(
    model: str, root: DataRoot, sources: list[Source], weights: dict[str, Path], tmp_path: Path
) -> None:
    """What ``--precision bf16`` costs in parity, measured here with bfloat16 autocast on a CPU (a GPU's bf16
    kernels round alike but are not these; the README says so)."""
    chosen = [source for source in sources if (source.seconds, source.channels, source.rate) == (30, 2, 48_000)]
    ours = stored(root, model, chosen, weights[model], precision="bf16")
    (source,) = chosen
    if model == "muq":
        theirs = reference.muq_reference(reference.load_muq(weights["muq"]), *decoded(source))
    elif model == "mert":
        theirs = reference.mert_reference(*reference.load_mert(weights["mert"]), *decoded(source))
    else:
        codec = reference.load_music2latent(weights["music2latent"] / "music2latent.pt", REDUCED_UNET)
        theirs = reference.music2latent_reference(codec, *decoded(source), tmp_path)
    assert compare(f"{model} (bf16 autocast, CPU)", chosen, ours, {source.item_id: theirs}) == []
