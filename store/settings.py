"""One settings object for every stage, read from defaults, a TOML file and ``MUSICTEXT_*`` variables.

Precedence (highest first): explicit arguments, environment variables, the TOML file named by
``MUSICTEXT_CONFIG`` (default ``./musictext.toml``), built-in defaults. Workers of a Prefect server
read the same variables, so a deployment and a CLI run agree on the data root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def config_file() -> Path:
    return Path(os.environ.get("MUSICTEXT_CONFIG", "musictext.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MUSICTEXT_", extra="ignore")

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
    shard_rows: int = Field(1024, ge=1, description="Rows per HDF5 chunk in embedding shards.")
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
    """Settings as a stage sees them; ``overrides`` win over everything (CLI flags, flow parameters)."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
