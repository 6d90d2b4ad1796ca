"""`musictext models fetch/list` against the loopback Hub: weights land in the cache at the pinned revision."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

from mirror import MirrorServer
from typer.testing import CliRunner

from embedders.mert import WEIGHTS as MERT
from embedders.spec import NAVIDROME_SPACE
from embedders.weights import locate_weights
from flows.cli import app
from store.settings import Settings

runner = CliRunner()
WEIGHTS = b"not really safetensors, but bytes with a checksum"
LISTED = {  # model: (space, stored size), as `musictext models list` prints them
    "dsp": ("musictext-dsp-1", "312"),
    "mert": (NAVIDROME_SPACE, "76,800"),
    "muq": (NAVIDROME_SPACE, "1,536"),
    "music2latent": (NAVIDROME_SPACE, "576"),
    "music2latent-stereo": (NAVIDROME_SPACE, "576"),
}


def table_rows(output: str) -> dict[str, list[str]]:
    """The rows of the printed table by model, each cell's wrapped lines joined with spaces."""
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells[0]:
            current = rows.setdefault(cells[0], cells)
        elif current is not None:
            current[:] = [f"{old} {new}".strip() for old, new in zip(current, cells, strict=True)]
    return rows


def test_list_shows_every_embedder_with_its_space_size_and_weights(tmp_path: Path) -> None:
    """In the default environment the model packages (muq, music2latent) are not even installed: the listing
    reads each embedder's spec, never its model."""
    result = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path / "hub")])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert list(rows) == list(LISTED)
    assert {name: (row[1], row[2]) for name, row in rows.items()} == LISTED
    assert rows["dsp"][4:] == ["none (weight-free)", "yes"]
    assert rows["mert"][4] == f"{MERT.repo_id} @ {MERT.revision[:12]}"
    for name in ("mert", "muq", "music2latent", "music2latent-stereo"):
        fetch = "music2latent" if name.startswith("music2latent") else name
        assert rows[name][5].startswith(f"no: `musictext models fetch {fetch}`"), rows[name]
    assert rows["muq"][3] == "120 s every 15 s at 24000 Hz" and rows["mert"][3] == "30 s every 5 s at 24000 Hz"
    for name in LISTED:
        assert f"\n{name}: " in result.output  # each embedder's one-line summary


LIST_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import sys
    {block}
    from typer.testing import CliRunner
    from flows.cli import app
    result = CliRunner().invoke(app, ["models", "list", "--cache-dir", sys.argv[1]])
    assert result.exit_code == 0, (result.output, result.exception)
    print(result.output)
    print("model packages loaded:", sorted(name for name in ("muq", "music2latent") if name in sys.modules))
""")


def test_listing_loads_no_model_package(tmp_path: Path) -> None:
    listed = subprocess.run([sys.executable, "-c", LIST_IN_A_FRESH_PROCESS.format(block=""), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "model packages loaded: []" in listed.stdout
    assert list(table_rows(listed.stdout)) == list(LISTED)


def test_listing_works_without_torch(tmp_path: Path) -> None:
    block = "for name in ('torch', 'transformers', 'safetensors'): sys.modules[name] = None  # not installed"
    listed = subprocess.run([sys.executable, "-c", LIST_IN_A_FRESH_PROCESS.format(block=block), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert list(table_rows(listed.stdout)) == list(LISTED)


def test_fetch_puts_the_pinned_revision_in_the_cache_and_list_shows_it(
        mirror: MirrorServer, mirror_settings: Settings, tmp_path: Path) -> None:
    mirror.hf_repo(MERT.repo_id, MERT.revision, {"config.json": b"{}", "preprocessor_config.json": b"{}",
                                                 "model.safetensors": WEIGHTS, "README.md": b"not fetched"},
                   repo_type="model", lfs={"model.safetensors"})
    cache = tmp_path / "hub"
    before = runner.invoke(app, ["models", "list", "--cache-dir", str(cache)])
    assert "musictext models fetch mert" in before.output

    fetched = runner.invoke(app, ["models", "fetch", "mert", "--cache-dir", str(cache)])
    assert fetched.exit_code == 0, fetched.output
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    assert digest in fetched.output
    located = locate_weights(MERT, cache_dir=cache)
    assert (located.revision, located.sha256) == (MERT.revision, digest)
    assert not (located.directory / "README.md").exists()

    after = runner.invoke(app, ["models", "list", "--cache-dir", str(cache)])
    assert digest[:16] in after.output and MERT.revision[:12] in after.output


def test_fetch_of_an_unknown_model_names_the_known_ones() -> None:
    result = runner.invoke(app, ["models", "fetch", "wav2vec"])
    assert result.exit_code == 2
    assert "mert" in result.output and "music2latent" in result.output
    assert "no such embedder" in result.output


def test_fetch_of_a_weight_free_model_says_so() -> None:
    result = runner.invoke(app, ["models", "fetch", "dsp"])
    assert result.exit_code == 2
    assert "it is weight-free" in " ".join(result.output.split())
