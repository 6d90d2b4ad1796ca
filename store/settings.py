"""One settings object for every stage, read from defaults, a TOML file and ``MUSICTEXT_*`` variables.

Precedence (highest first): explicit arguments, environment variables, the TOML file named by
``MUSICTEXT_CONFIG`` (default ``./musictext.toml``), built-in defaults. Workers of a Prefect server
read the same variables, so a deployment and a CLI run agree on the data root.

Strict on purpose: an unknown key in the file (``unit_sise = 5``) or an argument is an error, not a setting
silently left at its default, and every error names the field and where its value came from (the file, the
variable, an argument). Settings are read when a command or flow runs, never at import, so a bad file cannot
break ``musictext --help``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceParseError

from store.errors import UserError

ENV_PREFIX = "MUSICTEXT_"
Storage = Literal["float32", "float16"]
"""The dtypes a shard may store its vectors as (setting ``embed_storage``)."""


class InvalidSettingsError(UserError, ValueError):
    """Settings that cannot be used (bad TOML, an unknown key, a value of the wrong type), said with the field and
    the file, variable or argument it came from."""


def config_file() -> Path:
    return Path(os.environ.get("MUSICTEXT_CONFIG", "musictext.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    root: Path = Field(Path("data"), description="The data root every stage reads and writes.")
    unit_size: int = Field(100, ge=1, description="Items per work unit (one Prefect task each).")
    workers: int = Field(2, ge=1, description="Work units run at once inside one flow.")
    sample_rate: int = Field(44_100, description="Sample rate of the canonical clips.")
    clip_s: float = Field(
        30.0, ge=0, description="Longest clip; longer audio is cut into windows. 0: every dataset as whole tracks."
    )
    clip_hop_s: float = Field(30.0, gt=0, description="Hop between windows of long audio.")
    min_clip_s: float = Field(1.0, ge=0, description="Shorter decoded audio is rejected.")
    silence_dbfs: float = Field(-60.0, description="Clips whose peak is below this level are rejected as silent.")
    whole_tracks: list[str] = Field(
        default_factory=list,
        description="Datasets catalogued as one item per whole track (as Navidrome embeds them), whatever "
        "clip_s says.",
    )
    shard_rows: int = Field(1024, ge=1, description="Most rows per HDF5 chunk and per write in embedding shards "
                                                    "(a chunk also stays under 1 MiB of vectors and within the rows "
                                                    "its shard holds).")
    embed_devices: list[str] = Field(
        default_factory=list,
        description="Devices the weight-bearing models run on ('cuda:0', 'cuda:1', 'cpu'), one process each "
        "when several; empty: every visible GPU, or the CPU when there is none.",
    )
    embed_precision: Literal["reference", "bf16"] = Field(
        "reference",
        description="Numeric precision of the audio models: 'reference' runs each as Navidrome does (float32; "
        "Music2Latent under its package's float16 autocast on CUDA); 'bf16' runs bfloat16 autocast, faster on a "
        "GPU, its parity measured on a CPU only (README, 'Audio models').",
    )
    embed_storage: Storage = Field(
        "float32",
        description="How shards store vectors: 'float32', or 'float16' (half the bytes; cosine to float32 above "
        "0.9999 on MERT- and MuQ-sized enriched vectors: README, 'Audio models'). Readers always get float32.",
    )
    embed_workers: int = Field(4, ge=0, description="Decoding processes feeding each device (0: decode inline).")
    weights_dirs: dict[str, Path] = Field(
        default_factory=dict,
        description="A directory of weights per model name (e.g. mert = '/models/MERT-v1-330M'), used instead "
        "of the Hugging Face cache.",
    )

    mirrors: dict[str, str] = Field(
        default_factory=dict,
        description="Base URL per source host key (e.g. 'fma', 'mtg-jamendo'), replacing the origin: a lab "
        "mirror or a test server. Each source documents its keys.",
    )
    hf_endpoint: str = Field("https://huggingface.co", description="Hugging Face Hub endpoint (or a mirror).")
    youtube_url: str = Field("https://www.youtube.com/watch?v=", description="Prefix that makes a video URL.")
    youtube_search_url: str = Field(
        "https://www.youtube.com/results?sp=EgIQAQ%253D%253D&search_query=",
        description="Prefix that makes a YouTube search URL (videos only) of a URL-encoded query (msd audio=youtube).",
    )
    youtube_cookies: Path | None = Field(None, description="Netscape cookies file passed to yt-dlp.")
    youtube_sleep_s: float = Field(3.0, ge=0, description="Pause between YouTube requests of one worker.")
    youtube_workers: int = Field(2, ge=1, description="YouTube downloads at once.")
    http_attempts: int = Field(6, ge=1, description="Tries per HTTP request before a transient failure is recorded.")
    http_backoff_s: float = Field(1.0, ge=0, description="First wait before a retry; it doubles per failure.")
    http_backoff_max_s: float = Field(60.0, ge=0, description="Longest wait between two retries.")
    http_timeout_s: float = Field(60.0, gt=0, description="Connect/read timeout of one HTTP request.")
    max_download_bytes: int = Field(2 << 40, gt=0, description="Largest file a download may write.")
    max_member_bytes: int = Field(16 << 30, gt=0, description="Largest archive member extraction may write.")
    max_archive_bytes: int = Field(
        1 << 40, gt=0, description="Most one archive's extraction may write in all (FMA full is ~880 GiB)."
    )
    max_compression_ratio: float = Field(
        100.0, ge=1, description="Most bytes an archive member over 1 MiB, or a whole archive, may expand to per "
        "compressed byte (audio ~1, MSD's HDF5 files 2.5-3.6, bombs ~1,000).",
    )

    def wants_whole_tracks(self, dataset: str) -> bool:
        """Whether ``dataset`` is catalogued as whole tracks rather than ``clip_s`` windows."""
        return self.clip_s == 0 or dataset in self.whole_tracks

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return init_settings, env_settings, toml


def load_settings(**overrides: object) -> Settings:
    """Settings as a stage sees them; ``overrides`` win over everything (CLI flags, flow parameters).

    :class:`InvalidSettingsError` when they cannot be used: the TOML file is not TOML (its line is named), a key
    is unknown, or a value has the wrong type or range (the field and its source are named)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    _check_named_file()
    try:
        return Settings(**given)
    except tomllib.TOMLDecodeError as error:
        raise InvalidSettingsError(f"settings file {config_file().resolve()} is not valid TOML: {error}") from None
    except OSError as error:
        raise InvalidSettingsError(f"settings file {config_file().resolve()} cannot be read: {error}") from None
    except SourceParseError as error:  # a list or dict variable that is not JSON
        raise InvalidSettingsError(f"settings: {error}; a list or table in a {ENV_PREFIX}* variable is written as "
                                   f"JSON, e.g. {ENV_PREFIX}EMBED_DEVICES='[\"cuda:0\"]'") from None
    except ValidationError as error:
        problems = "; ".join(_problem(e, given) for e in error.errors())
        raise InvalidSettingsError(f"settings: {problems}") from None


def _check_named_file() -> None:
    """A file named by ``MUSICTEXT_CONFIG`` must be there: a typo in it would otherwise run on the defaults. (The
    default ``./musictext.toml`` may be absent; ``/dev/null`` is how to read no file.)"""
    named = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if named and (not Path(named).exists() or Path(named).is_dir()):
        state = "a folder" if Path(named).is_dir() else "not there"
        raise InvalidSettingsError(f"settings file {Path(named).resolve()} (named by {ENV_PREFIX}CONFIG) is {state}")


def _problem(error: Mapping[str, Any], given: Mapping[str, object]) -> str:
    """One validation error: the field, where its value came from and what is wrong, with a suggestion for an
    unknown key."""
    field = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(field, Settings.model_fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown setting {field!r} {_source(field, given)}{hint}"
    return f"{field} {_source(field, given)}: {error['msg']} (got {error['input']!r})"


def _source(field: str, given: Mapping[str, object]) -> str:
    """Where ``field``'s value came from, in precedence order: an argument, a variable, else the file."""
    top = field.split(".", 1)[0]
    if top in given:
        return "given as an argument"
    variable = f"{ENV_PREFIX}{top}".upper()
    if any(name.upper() == variable for name in os.environ):
        return f"in variable {variable}"
    return f"in {config_file().resolve()}"
