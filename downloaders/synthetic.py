"""``synthetic``: a captioned music corpus rendered offline, with no download and no licence to worry about.

Each item is a spec drawn from (seed, index): a style's instruments, tempo, key, dynamics, register,
density and drum groove. The catalog stores the spec in the row's ``extra`` with captions and tags
written from it; acquire composes the MIDI, renders it with FluidSynth and pretty_midi's General MIDI
soundfont, and writes ``raw/synthetic/<item-key>.wav`` with the ``.mid`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from downloaders.base import Source, SourceContext, SourceError
from downloaders.synthesis.captions import captions, tags
from downloaders.synthesis.compose import compose
from downloaders.synthesis.render import (
    SAMPLE_RATE,
    SOUNDFONT,
    RenderError,
    check_renderer,
    render,
    write_wav,
)
from downloaders.synthesis.spec import Spec, SpecError
from downloaders.synthesis.styles import STYLES, draw_spec
from store.atomic import atomic_path
from store.layout import DataRoot, item_key, make_item_id
from store.manifest import ManifestRow
from store.status import FailureClass, StatusRecord

DATASET = "synthetic"
DEFAULT_LIMIT = 200
GENERATOR = "musictext-synthetic/1"
LICENSE = "CC0-1.0"
STAGE = "acquire"
SPLITS = ((80, "train"), (90, "valid"), (100, "test"))
"""Cumulative percentages of the hash buckets that go to each split."""


def native_id(seed: int, index: int) -> str:
    return f"s{seed}-{index:06d}"


def split_of(native: str) -> str:
    """A split from a hash of the id, so an item keeps its split whatever else is catalogued."""
    bucket = int(hashlib.sha1(native.encode()).hexdigest()[:8], 16) % 100
    return next(name for bound, name in SPLITS if bucket < bound)


def _seed(ctx: SourceContext) -> int:
    raw = ctx.options.get("seed", 0)
    try:
        seed = int(str(raw).strip())
    except ValueError:
        raise SourceError(f"synthetic: seed={raw!r} is not a whole number; pass e.g. seed=0") from None
    if seed < 0:
        raise SourceError(f"synthetic: seed={seed} is negative; seeds are whole numbers from 0")
    return seed


def _limit(ctx: SourceContext) -> int:
    limit = DEFAULT_LIMIT if ctx.limit is None else ctx.limit
    if limit < 0:
        raise SourceError(f"synthetic: limit={limit} is negative; pass the number of items to generate")
    return limit


def row_for(seed: int, index: int) -> ManifestRow:
    """The manifest row of item ``index``: its captions and tags are written from the spec stored with it."""
    spec = draw_spec(seed, index)
    native = native_id(seed, index)
    extra = {"generator": GENERATOR, "soundfont": SOUNDFONT, "sample_rate": SAMPLE_RATE,
             "spec": spec.to_dict()}
    return ManifestRow(
        item_id=make_item_id(DATASET, native),
        dataset=DATASET,
        source=f"synthetic://seed={seed}/index={index}",
        split=split_of(native),
        start_s=0.0,
        end_s=spec.duration_s,
        captions=captions(spec),
        tags=tags(spec),
        license=LICENSE,
        extra=ManifestRow.encode_extra(extra),
        group=make_item_id(DATASET, native),
    )


def catalog(ctx: SourceContext) -> Iterator[ManifestRow]:
    seed = _seed(ctx)
    for index in range(_limit(ctx)):
        yield row_for(seed, index)


def spec_of(row: ManifestRow) -> Spec:
    """The spec stored in a row, or a ``SpecError`` saying what is wrong with it."""
    try:
        extra = json.loads(row.extra)
    except json.JSONDecodeError as exc:
        raise SpecError(f"extra is not valid JSON ({exc})") from None
    if not isinstance(extra, dict) or "spec" not in extra:
        raise SpecError("extra has no 'spec' object")
    return Spec.from_dict(extra["spec"])


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    return root.raw_dir(DATASET) / f"{item_key(row.item_id)}.wav"


def _render_row(row: ManifestRow, wav: Path) -> None:
    """Compose, render and write the MIDI then the WAV, each atomically: the WAV's presence means done."""
    spec = spec_of(row)
    midi = compose(spec)
    audio = render(midi, spec.duration_s)
    with atomic_path(wav.with_suffix(".mid")) as temp:
        midi.write(str(temp))
    with atomic_path(wav) as temp:
        write_wav(temp, audio)


def _acquire_one(row: ManifestRow, root: DataRoot) -> StatusRecord:
    wav = audio_path(row, root)
    output = str(wav.relative_to(root.path))
    if wav.exists():
        return StatusRecord.ok(row.item_id, STAGE, output=output, detail="already rendered")
    started = time.perf_counter()
    try:
        _render_row(row, wav)
    except SpecError as exc:
        return StatusRecord.failed(row.item_id, STAGE, "invalid_spec",
                                   f"{row.item_id}: the spec in the manifest row is unusable: {exc}; "
                                   "re-run the catalog stage for synthetic to rewrite the row")
    except RenderError as exc:
        return StatusRecord.failed(row.item_id, STAGE, "render_failed", f"{row.item_id}: {exc}")
    except OSError as exc:
        return StatusRecord.failed(row.item_id, STAGE, "write_failed",
                                   f"{row.item_id}: could not write {wav}: {exc}; "
                                   "check free space and permissions", failure_class=FailureClass.TRANSIENT)
    except Exception as exc:  # one item's bug must not stop the batch (rule 4); the record carries the cause
        return StatusRecord.failed(row.item_id, STAGE, "unexpected_error",
                                   f"{row.item_id}: rendering raised {type(exc).__name__}: {exc}; "
                                   "please report it with the row's spec")
    return StatusRecord.ok(row.item_id, STAGE, output=output, duration_s=time.perf_counter() - started)


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    """Render every row whose WAV is missing; one record per row, in order."""
    if any(not audio_path(row, ctx.root).exists() for row in rows):
        try:
            check_renderer()
        except RenderError as exc:
            raise SourceError(f"synthetic: cannot render: {exc}") from None
    for row in rows:
        yield _acquire_one(row, ctx.root)


SOURCE = Source(
    name=DATASET,
    description="Music composed from known attributes (General MIDI instruments, tempo, key, dynamics, "
                "register, density, drum groove), rendered offline with FluidSynth and captioned from them.",
    needs="no download; the FluidSynth library, pyfluidsynth and pretty_midi (which ships the soundfont)",
    catalog=catalog,
    acquire=acquire,
    audio_path=audio_path,
    options={"seed": "Whole number (default 0) that, with an item's index, fixes everything about the item."},
    tag_families={
        "genre": tuple(sorted({style.genre for style in STYLES.values()})),
        "tempo": ("slow tempo", "medium tempo", "fast tempo"),
        "key": ("major key", "minor key"),
    },
)
