"""A user's mistake is one ``error:`` line and exit code 2, never a traceback; names that become paths are checked;
``verify`` exits 1 when it finds problems. Through the real CLI (the installed script where what a user sees on
the terminal matters, typer's runner otherwise) and real Prefect flows."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from flows.cli import app
from store.errors import InvalidInputError, UserError
from store.layout import DataRoot
from store.names import InvalidNameError, check_name

runner = CliRunner()
MUSICTEXT = Path(sys.executable).parent / "musictext"


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _musictext(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MUSICTEXT), *args], env=env, capture_output=True, text=True, timeout=300)


def test_an_unknown_source_option_is_one_line_before_any_flow_runs(tmp_path: Path) -> None:
    """Before: Prefect's temporary server started, two flow runs failed and printed 66 lines of tracebacks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTEXT_", "PREFECT_API_URL"))}
    env |= {"MUSICTEXT_CONFIG": os.devnull, "PREFECT_HOME": str(tmp_path / "prefect"),
            "CI": "true"}  # as CI sets it: pyfluidsynth then prints where it found the library, on stdout
    result = _musictext("ingest", "synthetic", "-o", "colour=red", "--root", str(tmp_path / "data"), env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: synthetic: unknown option(s) colour; this source takes: seed"]
    assert not (tmp_path / "data").exists()


@pytest.mark.integration
def test_a_mistake_found_inside_a_flow_is_logged_and_said_without_a_traceback(cli_env: dict[str, str],
                                                                             tmp_path: Path) -> None:
    """An empty catalog is only known once the catalog flow has read the source. Before, the run printed
    tracebacks, and then acquire said "no manifest: run `musictext ingest local` first" right after the ingest."""
    (tmp_path / "music").mkdir()
    result = _musictext("ingest", "local", "-o", f"path={tmp_path / 'music'}", "--root", str(tmp_path / "data"),
                        env=cli_env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    message = ("the catalog of 'local' has no items: the source listed none with these options and settings; "
               "check its options (`musictext datasets`) and mirrors")
    assert _error_lines(output) == [f"error: {message}"]
    assert f'Encountered exception during execution: SourceError("{message}")' in output  # the run's own log


def test_a_stage_without_a_manifest_is_one_line_before_any_flow(tmp_path: Path) -> None:
    for command in (["preprocess", "synthetic"], ["embed", "synthetic"], ["verify", "synthetic"]):
        result = runner.invoke(app, [*command, "--root", str(tmp_path)])
        assert result.exit_code == 2
        assert result.output.splitlines() == [
            f"error: no manifest for 'synthetic' under {tmp_path}: run `musictext ingest synthetic` first"]


@flow(name="mistaken")
def _mistaken() -> None:
    raise InvalidInputError("batch_size must be positive")


@flow(name="crashing")
def _crashing() -> None:
    raise RuntimeError("a bug")


@pytest.mark.integration
def test_flow_runs_log_a_user_error_without_its_traceback_and_a_crash_with_it(
        prefect_server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="prefect.flow_runs")
    for run, error in ((_mistaken, InvalidInputError), (_crashing, RuntimeError)):
        with pytest.raises(error):
            run()
    logged = {type(r.args[0]): r for r in caplog.records
              if r.name == "prefect.flow_runs" and str(r.msg).startswith("Encountered exception")}
    assert logged[InvalidInputError].exc_info is None
    assert logged[RuntimeError].exc_info is not None and "Traceback" in caplog.text


def test_a_root_that_is_a_file_is_said_as_such(tmp_path: Path) -> None:
    """Before: `ingest` died on a NotADirectoryError traceback and `status` said there was nothing there yet."""
    root = tmp_path / "data"
    root.write_text("not a folder")
    for command in (["ingest", "synthetic"], ["status"], ["verify", "synthetic"]):
        result = runner.invoke(app, [*command, "--root", str(root)])
        assert result.exit_code == 2, result.output
        assert _error_lines(result.output) == [
            f"error: the data root {root} is a file, not a folder: point --root (or MUSICTEXT_ROOT, or root in "
            "musictext.toml) at a folder, new or existing"]


@pytest.mark.parametrize("command", [["deploy"], ["worker", "--pool", "cpu"], ["reprocess", "synthetic"]])
def test_server_commands_without_a_server_say_how_to_start_one(monkeypatch: pytest.MonkeyPatch,
                                                               command: list[str]) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    [line] = _error_lines(result.output)
    assert line.startswith("error: no Prefect server configured: start one with `musictext server`"), line


@pytest.mark.parametrize(("command", "what"), [
    (["evaluate", "some-run", "--name", "../../x"], "report name '../../x'"),
    (["verify", "../x"], "dataset '../x'"),
    (["embed", "a/b"], "dataset 'a/b'"),
    (["search", "piano", "--run", "../x"], "run id '../x'"),
    (["train", "--run-id", "../x", "--head", "pooled"], "run_id '../x-pooled'"),
    (["train", "--dataset", ".hidden"], "dataset '.hidden'"),
])
def test_a_name_that_would_leave_its_folder_is_refused(tmp_path: Path, command: list[str], what: str) -> None:
    root = tmp_path / "data"
    result = runner.invoke(app, [*command, "--root", str(root)])
    assert result.exit_code == 2, result.output
    [line] = _error_lines(result.output)
    assert f"{what} cannot be used" in line and "becomes a folder name" in line, line
    assert "Traceback" not in result.output and not root.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", [["verify", "synthetic", "--model", "../x"], ["embed", "synthetic", "--model",
                                                                                  "clap"]])
def test_an_unknown_model_is_refused_before_any_flow(tmp_path: Path, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--root", str(tmp_path / "data")])
    assert result.exit_code == 2
    [line] = _error_lines(result.output)
    assert "unknown embedder" in line and "available: dsp, mert" in line
    assert not (tmp_path / "data").exists()


def test_training_options_are_checked_before_the_flow(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--head", "mlp", "--batch-size", "0", "--root", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert _error_lines(result.output) == ["error: unknown head(s) mlp; heads are frames, pooled"]
    result = runner.invoke(app, ["train", "--batch-size", "0", "--root", str(tmp_path / "data")])
    assert _error_lines(result.output) == ["error: training config: batch_size must be positive, got 0"]
    assert not (tmp_path / "data").exists()


def test_runs_to_evaluate_or_search_must_exist(tmp_path: Path) -> None:
    for command in (["evaluate", "nope"], ["search", "piano", "--run", "nope"]):
        result = runner.invoke(app, [*command, "--root", str(tmp_path)])
        assert result.exit_code == 2
        assert _error_lines(result.output) == [
            f"error: no training run 'nope' under {tmp_path / 'runs'}; `musictext train` makes one"]


def test_a_run_whose_checkpoint_is_not_a_saved_embedder_is_one_line_in_search(tmp_path: Path) -> None:
    """search once caught every ValueError and FileNotFoundError, bugs too; now only the family, this among it."""
    from training.config import TrainConfig
    from training.trainer import checkpoint_model_dir

    root = DataRoot(tmp_path)
    config = TrainConfig(model="dsp", datasets=("synthetic",), run_id="broken", space="musictext-dsp-1")
    model_dir = checkpoint_model_dir(root.run_dir("broken"))
    model_dir.mkdir(parents=True)
    (root.run_dir("broken") / "config.json").write_text(json.dumps(config.to_json()))
    result = runner.invoke(app, ["search", "piano", "--run", "broken", "--root", str(tmp_path)])
    assert result.exit_code == 2
    [line] = _error_lines(result.output)
    assert line == f"error: {model_dir} is not a saved text embedder: it has no text_embedder.json"


@pytest.mark.parametrize("name", ["fma", "mtg_jamendo", "music2latent-stereo", "navidrome-2025.11", "a+b", "x" * 128])
def test_names_that_are_one_portable_folder_name_pass(name: str) -> None:
    assert check_name(name, "dataset") == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "-x", ".hidden", "x" * 129, "a\nb", "é"])
def test_names_that_are_not_refused_in_every_layout_method(tmp_path: Path, name: str) -> None:
    root = DataRoot(tmp_path)
    with pytest.raises(InvalidNameError) as refused:
        check_name(name, "dataset")
    assert isinstance(refused.value, UserError) and isinstance(refused.value, ValueError)
    for make in (root.manifest, root.raw_dir, root.clip_dir, root.run_dir, root.evaluation_dir,
                 lambda n: root.shard_dir(n, "fma", "space"), lambda n: root.shard_dir("dsp", "fma", n),
                 lambda n: root.embed_status_dir("dsp", n, "space"), lambda n: root.status_dir("verify", n)):
        with pytest.raises(InvalidNameError):
            make(name)


@pytest.mark.integration
def test_verify_and_the_pipeline_exit_1_when_verify_finds_problems_and_0_when_all_is_explained(prefect_server: str,
                                                                           tmp_path: Path) -> None:
    root = ["--root", str(tmp_path)]
    assert runner.invoke(app, ["ingest", "synthetic", "--limit", "2", *root]).exit_code == 0

    stalled = runner.invoke(app, ["verify", "synthetic", *root])  # acquired, never preprocessed
    assert stalled.exit_code == 1, stalled.output
    assert "verdict unexplained_failures" in " ".join(stalled.output.split())
    assert "verify found problems in synthetic" in stalled.output and not _error_lines(stalled.output)
    pipeline = ["pipeline", "-d", "synthetic", "--stage", "verify", "--in-process", *root]
    assert runner.invoke(app, pipeline).exit_code == 1  # the pipeline's verify stage counts the same

    assert runner.invoke(app, ["preprocess", "synthetic", *root]).exit_code == 0
    verified = runner.invoke(app, ["verify", "synthetic", *root])
    assert verified.exit_code == 0, verified.output
    assert "verdict ok" in " ".join(verified.output.split())
    assert runner.invoke(app, pipeline).exit_code == 1  # its models (dsp) have no vectors yet
    assert runner.invoke(app, ["embed", "synthetic", *root]).exit_code == 0
    embedded = runner.invoke(app, pipeline)
    assert embedded.exit_code == 0, embedded.output
