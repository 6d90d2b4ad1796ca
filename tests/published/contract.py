"""The source contract's fixtures: for every registered source, how to publish a small copy of it and what
the contract test (``tests/test_source_contract.py``) needs to catalog and acquire it.

Each entry of :data:`SETUPS` serves the copy its own builder makes (``tests/published/<source>.py``, the
one that source's own tests use) on the loopback mirror, writes what the source reads from a folder
(``local``'s audio, ``msd``'s previews) under the scratch ``folder``, and returns a :class:`Fixture`. The
contract acquires the first row the catalog gives, so the copy must serve good audio for that one. A new
dataset module is covered by the contract once it has an entry here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audio_files import write_captions_csv, write_good_files
from mirror import MirrorServer

from downloaders.musicbench import REVISION as MUSICBENCH_REVISION
from published import audioset as published_audioset
from published import fma as published_fma
from published import magnatagatune as published_magnatagatune
from published import msd as published_msd
from published import mtg_jamendo as published_mtg_jamendo
from published import musicbench as published_musicbench
from published import musiccaps as published_musiccaps
from published import song_describer as published_song_describer


@dataclass(frozen=True)
class Fixture:
    """How the contract test catalogs one source's copy."""

    env: Mapping[str, str] = field(default_factory=dict)
    """``MUSICTEXT_*`` variables to set over the mirror settings: the copy's host keys, window lengths."""
    options: Mapping[str, Any] = field(default_factory=dict)
    limit: int | None = None
    """The catalog's limit; ``None`` catalogs the whole copy."""
    audio_home: Path | None = None
    """The folder a source that reads audio in place (``local``) finds it in; ``None``: the source keeps its
    audio under ``raw/<dataset>/``, as every downloading source does."""


Setup = Callable[[MirrorServer, Path], Fixture]


def _mirrors(mirror: MirrorServer, hosts: Mapping[str, str]) -> dict[str, str]:
    """``MUSICTEXT_MIRRORS`` naming the copy's host keys beside those the mirror settings already set."""
    return {"MUSICTEXT_MIRRORS": json.dumps(json.loads(mirror.environment()["MUSICTEXT_MIRRORS"]) | dict(hosts))}


def audioset(mirror: MirrorServer, folder: Path) -> Fixture:
    """The eval split too, so the catalog has test rows."""
    hosts = published_audioset.register(mirror, published_audioset.build())
    return Fixture(env=_mirrors(mirror, hosts), options={"split": "balanced,eval"})


def fma(mirror: MirrorServer, folder: Path) -> Fixture:
    copy = published_fma.build()
    hosts = {published_fma.HOST: published_fma.serve(mirror, copy)}
    return Fixture(env=_mirrors(mirror, hosts), options=copy.options("small"))


def local(mirror: MirrorServer, folder: Path) -> Fixture:
    """A folder of good audio in every container the toolkit reads, captioned by ``captions.csv``."""
    music = folder / "music"
    write_captions_csv(music, write_good_files(music))
    return Fixture(options={"path": str(music)}, audio_home=music)


def magnatagatune(mirror: MirrorServer, folder: Path) -> Fixture:
    copy = published_magnatagatune.build()
    hosts = {published_magnatagatune.HOST_KEY: published_magnatagatune.serve(mirror, copy)}
    return Fixture(env=_mirrors(mirror, hosts), options=copy.options)


def msd(mirror: MirrorServer, folder: Path) -> Fixture:
    """Audio from a folder of previews, since MSD publishes none."""
    copy = published_msd.build()
    hosts = published_msd.serve(mirror, copy)
    previews = folder / "previews"
    published_msd.write_previews(previews, copy.songs)
    return Fixture(env=_mirrors(mirror, hosts), options={"audio_dir": str(previews)})


def mtg_jamendo(mirror: MirrorServer, folder: Path) -> Fixture:
    """5 s windows, so each short track is several rows."""
    hosts = published_mtg_jamendo.serve(mirror, published_mtg_jamendo.build())
    return Fixture(env=_mirrors(mirror, hosts) | published_mtg_jamendo.CLIP_SETTINGS)


def musicbench(mirror: MirrorServer, folder: Path) -> Fixture:
    """Both test files too, so the catalog has test rows."""
    published_musicbench.register(mirror, published_musicbench.build(), MUSICBENCH_REVISION)
    return Fixture(options={"split": "all"})


def musiccaps(mirror: MirrorServer, folder: Path) -> Fixture:
    published_musiccaps.register(mirror, published_musiccaps.build())
    return Fixture()


def song_describer(mirror: MirrorServer, folder: Path) -> Fixture:
    hosts = published_song_describer.serve(mirror, published_song_describer.build())
    return Fixture(env=_mirrors(mirror, hosts))


def synthetic(mirror: MirrorServer, folder: Path) -> Fixture:
    """A few items of the default 200: rendering is the slow part, and only one is rendered."""
    return Fixture(limit=10)


SETUPS: dict[str, Setup] = {setup.__name__: setup for setup in (
    audioset, fma, local, magnatagatune, msd, mtg_jamendo, musicbench, musiccaps, song_describer, synthetic,
)}
"""Source name → its setup."""
