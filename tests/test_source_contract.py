"""The source contract (``downloaders/base.py``), checked with one test body for every registered source, as
mirdata checks every loader: a new ``downloaders/<name>.py`` is covered by adding a setup for its published
copy to ``tests/published/contract.py``, without writing a test.

Each source is catalogued and one item acquired against the loopback mirror with the stages' own pieces
(``canonical_row`` as the catalog flow maps rows, ``work.acquire_unit`` as the acquire task runs, ``plan_acquire``
as a re-run decides): the Prefect flows around them are covered by each source's own tests, and leaving them
out keeps this module fast. A re-run must find the item done, and acquiring it again anyway (``--force``, a
lost status record) must neither write nor fetch its audio again.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from mirror import MirrorServer
from published.contract import SETUPS

from downloaders import get_source, source_names
from downloaders.base import Source, SourceContext, SourceError
from flows import work
from flows.plan import plan_acquire
from processors.decode import decode
from store.errors import UserError
from store.layout import DataRoot
from store.manifest import ManifestRow, canonical_row
from store.settings import load_settings
from store.splits import SPLITS
from store.status import read_status

GROUP = re.compile(r"^[a-z][a-z0-9_-]*:.+$")
"""``<namespace>:<id>``: ``youtube:<video id>``, ``jamendo:<number>``, ``<dataset>:<id>``."""


@pytest.mark.parametrize("name", source_names())
def test_every_option_has_a_help_line_and_an_unknown_one_is_refused(name: str) -> None:
    source = get_source(name)
    assert not [option for option, help_line in source.options.items() if not help_line.strip()]
    with pytest.raises(SourceError, match="no_such_option") as refused:
        source.check_options({"no_such_option": "1"})
    assert isinstance(refused.value, UserError)


@pytest.mark.usefixtures("mirror_settings")
@pytest.mark.parametrize("name", source_names())
def test_catalog_and_acquire_keep_the_contract_and_a_rerun_changes_nothing(
    name: str, mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if name not in SETUPS:
        pytest.fail(f"downloaders/{name}.py has no entry in tests/published/contract.py: add a setup there that "
                    f"publishes a small copy of {name} on the mirror (its builder in tests/published/{name}.py)")
    source = get_source(name)
    fixture = SETUPS[name](mirror, tmp_path)
    for variable, value in fixture.env.items():
        monkeypatch.setenv(variable, value)
    settings = load_settings()
    ctx = SourceContext(DataRoot(settings.root), settings, fixture.options, fixture.limit)
    home = fixture.audio_home or ctx.root.raw_dir(name)

    rows = _catalog(source, ctx)
    assert rows, f"{name}: the catalog of its published copy has no rows"
    assert not _duplicates(rows)
    assert not [problem for row in rows for problem in _row_problems(source, row, ctx.root, home)]

    row = rows[0]
    before = len(mirror.requests)
    (record,) = work.acquire_unit([row], ctx).records
    assert (record.item_id, record.is_ok) == (row.item_id, True), record.detail
    assert read_status(ctx.root.status_dir("acquire", name))[row.item_id].is_ok
    audio = source.audio_path(row, ctx.root)
    assert decode(audio, *source.clip_range(row)).frames > 0, f"{audio} holds no audio"

    fetched = {path for _, path, _ in mirror.requests[before:]}
    written = _mtimes(home)
    before = len(mirror.requests)
    assert _catalog(source, ctx) == rows, "a re-run catalogued other rows"
    plan = plan_acquire([row], ctx.root, source, force=False)
    assert (plan.todo, plan.done) == ([], 1), f"a re-run would acquire {row.item_id} again"
    (again,) = work.acquire_unit([row], ctx).records  # as --force, or a lost status record, would
    assert again.is_ok, again.detail
    assert _mtimes(home) == written, f"a re-run wrote files under {home} again"
    assert fetched.isdisjoint(path for _, path, _ in mirror.requests[before:]), "a re-run fetched audio again"


def _catalog(source: Source, ctx: SourceContext) -> list[ManifestRow]:
    """The rows as the catalog flow writes them."""
    return [canonical_row(row) for row in source.catalog(ctx)]


def _duplicates(rows: list[ManifestRow]) -> list[str]:
    return [item_id for item_id, count in Counter(row.item_id for row in rows).items() if count > 1]


def _row_problems(source: Source, row: ManifestRow, root: DataRoot, home: Path) -> list[str]:
    """What breaks the contract in one catalogued row, each named by the row's id; ``home`` is the folder its
    audio must lie in."""
    audio = source.audio_path(row, root)
    checks = {
        f"its id does not start with {source.name}:": row.item_id.startswith(f"{source.name}:"),
        f"its dataset is {row.dataset!r}": row.dataset == source.name,
        f"its group {row.group!r} is not <namespace>:<id>": bool(GROUP.match(row.group or "")),
        f"its split {row.split!r} is not one of {SPLITS}": row.split in (*SPLITS, None),
        "it is a test row that is not held out": row.held_out or row.split != "test",
        "it has neither captions nor tags": bool(row.captions or row.tags),
        f"its audio path {audio} is not under {home}": audio.resolve().is_relative_to(home.resolve()),
    }
    return [f"{row.item_id}: {problem}" for problem, kept in checks.items() if not kept]


def _mtimes(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}
