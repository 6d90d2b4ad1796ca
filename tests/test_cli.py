"""The ``musictext`` command line: listings, and clear errors for what a user can get wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from store.layout import DataRoot
from store.manifest import ManifestRow, write_manifest

runner = CliRunner()


def test_datasets_lists_each_source_with_its_options() -> None:
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    for expected in ("synthetic", "local", "seed", "captions"):
        assert expected in result.output


def test_status_of_an_empty_root_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--root", str(tmp_path)])
    assert result.exit_code == 0
    assert "musictext ingest synthetic" in result.output


def test_malformed_option_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", "synthetic", "-o", "seed", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["ingest", "nosuch"], "unknown dataset 'nosuch'"),
    (["ingest", "synthetic", "-o", "colour=red"], "unknown option(s) colour"),
    (["preprocess", "synthetic"], "run `musictext ingest synthetic` first"),
    (["embed", "synthetic", "--model", "music2latent"], "run `musictext ingest synthetic` first"),
])
def test_source_errors_exit_2_with_the_reason(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--root", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "manifests").exists()


@pytest.mark.integration
@pytest.mark.parametrize(("model", "message"), [
    ("music2latent", "needs the models extra"),  # (no music2latent here)
    ("music2latent", "pip install -e '.[models]'"),
    # Without both the package and the weights, the missing package is said first (not a 5.2 GB download).
    ("muq", "needs the models extra"),
])
def test_a_missing_model_package_exits_2_with_the_reason(prefect_server: str, tmp_path: Path, model: str,
                                                         message: str) -> None:
    root = DataRoot(tmp_path)
    write_manifest(root.manifest("synthetic"), [ManifestRow("synthetic:0", "synthetic", "0.wav")])
    result = runner.invoke(app, ["embed", "synthetic", "--model", model, "--root", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "embeddings").exists()


def test_an_unknown_precision_is_one_usage_error_line_without_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["embed", "x", "--precision", "fp8", "--root", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if "precision" in line]
    assert "Invalid value for --precision: must be one of reference, bf16" in line
    assert not (tmp_path / "data").exists()  # refused before any flow ran
