"""Settings are strict and say where a bad value came from: the TOML file (and its line, for bad syntax), a
``MUSICTEXT_*`` variable, or an argument; an unknown key is an error; a bad file never breaks ``--help``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from store.errors import UserError
from store.settings import InvalidSettingsError, load_settings

MUSICTEXT = Path(sys.executable).parent / "musictext"


@pytest.fixture()
def toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file named by ``MUSICTEXT_CONFIG``, no other ``MUSICTEXT_*`` variable set."""
    for name in [name for name in os.environ if name.startswith("MUSICTEXT_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "musictext.toml"
    monkeypatch.setenv("MUSICTEXT_CONFIG", str(path))
    return path


def test_an_unknown_key_is_an_error_naming_the_file_and_the_key_it_resembles(toml: Path) -> None:
    toml.write_text("unit_sise = 5\n")
    with pytest.raises(InvalidSettingsError) as refused:
        load_settings()
    assert str(refused.value) == f"settings: unknown setting 'unit_sise' in {toml} (did you mean unit_size?)"
    assert isinstance(refused.value, UserError)


def test_a_value_of_the_wrong_type_names_the_field_the_file_and_the_value(toml: Path) -> None:
    toml.write_text('workers = "many"\n[mirrors]\nfma = 3\n')
    with pytest.raises(InvalidSettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert f"workers in {toml}: Input should be a valid integer" in message and "(got 'many')" in message
    assert f"mirrors.fma in {toml}: Input should be a valid string" in message


def test_each_value_is_blamed_on_the_source_it_came_from(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml.write_text("workers = 0\nunit_size = 5\n")
    monkeypatch.setenv("MUSICTEXT_WORKERS", "-1")  # a variable wins over the file: it is the one to blame
    with pytest.raises(InvalidSettingsError) as refused:
        load_settings(unit_size=0)
    message = str(refused.value)
    assert "unit_size given as an argument: Input should be greater than or equal to 1 (got 0)" in message
    assert "workers in variable MUSICTEXT_WORKERS: Input should be greater than or equal to 1 (got '-1')" in message
    assert str(toml) not in message


def test_bad_toml_names_the_file_and_the_line(toml: Path) -> None:
    toml.write_text('root = "/data"\nworkers = = 3\n')
    with pytest.raises(InvalidSettingsError, match=rf"settings file {toml} is not valid TOML: .*\(at line 2, column"):
        load_settings()


def test_a_list_variable_that_is_not_json_says_how_to_write_one(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml.write_text("")
    monkeypatch.setenv("MUSICTEXT_EMBED_DEVICES", "cuda:0")
    with pytest.raises(InvalidSettingsError, match=r"embed_devices.*written as JSON"):
        load_settings()


def test_a_named_settings_file_that_is_not_there_is_an_error_and_dev_null_reads_none(
        toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidSettingsError, match=rf"settings file {toml} \(named by MUSICTEXT_CONFIG\) is not there"):
        load_settings()
    monkeypatch.setenv("MUSICTEXT_CONFIG", str(toml.parent))
    with pytest.raises(InvalidSettingsError, match="is a folder"):
        load_settings()
    monkeypatch.setenv("MUSICTEXT_CONFIG", os.devnull)
    assert load_settings().unit_size == 100


def _musictext(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``musictext`` in ``cwd``, reading ``cwd/musictext.toml`` (the default settings file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTEXT_", "PREFECT_API_URL"))}
    return subprocess.run([str(MUSICTEXT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_broken_settings_file_never_breaks_help_and_a_command_says_one_line(tmp_path: Path) -> None:
    """Before, the flows read the settings when imported: `workers = "many"` made even --help crash."""
    (tmp_path / "musictext.toml").write_text('workers = "many"\n')
    helped = _musictext("--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "ingest" in helped.stdout

    status = _musictext("status", cwd=tmp_path)
    assert status.returncode == 2
    assert status.stdout == "" and "Traceback" not in status.stderr
    assert status.stderr.splitlines() == [
        f"error: settings: workers in {tmp_path / 'musictext.toml'}: Input should be a valid integer, unable to "
        "parse string as an integer (got 'many')"]
