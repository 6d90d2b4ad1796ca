"""``musictext --help`` answers without loading Prefect, torch or the data formats (a second and more of imports):
:mod:`flows.cli` imports them inside the commands that use them, and fills in the help texts that list embedders,
precisions and storages only for the command that runs."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from flows.cli import app

HEAVY = ("prefect", "torch", "transformers", "pyarrow", "h5py", "numpy", "pydantic_settings", "embedders",
         "downloaders", "verification")

HELP_THEN_LOADED = f"""
import sys
from flows.cli import app
try:
    app(["--help"])
except SystemExit:
    pass
print(sorted(name for name in {HEAVY!r} if name in sys.modules))
"""


def test_help_loads_none_of_the_heavy_packages() -> None:
    done = subprocess.run([sys.executable, "-c", HELP_THEN_LOADED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pipeline" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"


def test_a_command_help_still_names_the_embedders_precisions_and_storages() -> None:
    result = CliRunner().invoke(app, ["embed", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    for expected in ("Audio embedder: dsp, mert, muq, music2latent", "reference or bf16", "float32 or float16"):
        assert expected in text
    assert not any(marker in text for marker in ("{embedders}", "{precisions}", "{storages}"))
