"""When a mirror serves something other than what a source pins (FMA's sha1s, MagnaTagATune's part sizes, a Hub
revision), the message names the ``-o`` option that pins what the mirror serves: against the loopback mirror,
serving each dataset's published layout."""

from __future__ import annotations

import pytest
from published import fma as published_fma
from published import magnatagatune as published_mtt
from published import musiccaps as published_musiccaps

from downloaders import fma, magnatagatune, musiccaps
from downloaders.base import SourceContext, SourceError
from store.layout import DataRoot
from store.settings import Settings


def _context(settings: Settings, options: dict, limit: int | None = None) -> SourceContext:
    return SourceContext(DataRoot(settings.root), settings, options, limit)


def test_fma_names_the_sha1_options_when_a_zip_differs_from_the_pinned_sum(mirror, mirror_settings) -> None:
    copy = published_fma.build()  # its zips are not FMA's, so FMA's published sums do not match them
    published_fma.serve(mirror, copy)
    with pytest.raises(SourceError) as refused:
        fma.catalog(_context(mirror_settings, {}))
    message = str(refused.value)
    assert "fma: cannot read the metadata: fma_metadata.zip: the sha1 of the file" in message
    assert message.endswith("If this mirror serves another version on purpose, pin it with "
                            "`-o metadata_sha1=<sha1 of fma_metadata.zip>`.")

    options = {"metadata_sha1": copy.sha1["fma_metadata.zip"]}  # the subset's zip keeps FMA's pinned sum
    ctx = _context(mirror_settings, options, limit=2)
    records = list(fma.acquire(fma.catalog(ctx), ctx))
    assert [r.reason for r in records] == ["checksum_mismatch"] * 2
    assert all(r.detail.endswith("pin it with `-o sha1=<sha1 of fma_small.zip>`.") for r in records)


def test_magnatagatune_names_part_sizes_when_a_part_differs_from_the_published_size(mirror, mirror_settings) -> None:
    published_mtt.serve(mirror, published_mtt.build())  # small parts, not the published 1.1 GB ones
    ctx = _context(mirror_settings, {}, limit=2)
    records = list(magnatagatune.acquire(list(magnatagatune.catalog(ctx)), ctx))
    assert [r.reason for r in records] == ["size_mismatch"] * 2
    assert "mp3.zip.001 serves" in records[0].detail
    assert records[0].detail.endswith(
        "pin it with `-o part_sizes=<bytes of .001>,<.002>,<.003> (or any)`.")


def test_a_hub_revision_the_mirror_lacks_names_the_revision_option(mirror, mirror_settings) -> None:
    published_musiccaps.register(mirror, published_musiccaps.build(), revision="1" * 40)
    with pytest.raises(SourceError) as refused:
        list(musiccaps.catalog(_context(mirror_settings, {})))
    message = str(refused.value)
    assert message.startswith(f"musiccaps: could not get {musiccaps.FILE} from {musiccaps.REPO}@{musiccaps.REVISION}")
    assert message.endswith("If this mirror serves another version on purpose, pin it with `-o revision=<commit>`.")
    rows = list(musiccaps.catalog(_context(mirror_settings, {"revision": "1" * 40})))
    assert rows
