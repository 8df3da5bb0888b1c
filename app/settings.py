"""Settings from the environment (prefix RAICES_, plus DATABASE_URL and PORT)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _default_mirror() -> Path | None:
    candidate = PROJECT_ROOT.parent / "shared" / "geodata"
    return candidate if candidate.is_dir() else None


class Settings(BaseSettings):
    """Service settings; every field can be set by an environment variable."""

    model_config = SettingsConfigDict(
        env_prefix="RAICES_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "RAICES_DATABASE_URL")
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535, validation_alias=AliasChoices("PORT", "RAICES_PORT"))
    data_dir: Path = PROJECT_ROOT / ".data"
    data_mirror: Path | None = Field(default_factory=_default_mirror)
    data_cache: Path = PROJECT_ROOT / ".data" / "cache"
    manifest: Path = PROJECT_ROOT / "geodata" / "sources.toml"
    indicator_catalogue: Path = PROJECT_ROOT / "geodata" / "indicators.csv"
    raster_dir: Path = PROJECT_ROOT / ".data" / "rasters"
    allow_download: bool = True
    download_timeout: float = 30.0
    db_connect_timeout: int = 3
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_statement_timeout_ms: int = 30_000
    log_level: str = "INFO"
    # page size of the planner API's lists (/v1/municipalities, /v1/priorities, /v1/scores, /v1/hazards/…)
    max_limit: int = Field(default=1000, ge=1)
    default_limit: int = Field(default=100, ge=1)
    # access and limits (see README "Production")
    api_keys: SecretStr = SecretStr("")  # comma-separated keys; kept only as SHA-256 hashes in memory
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    rate_limit_per_minute: int = Field(default=600, ge=0)  # per client address; 0 disables
    public_max_draws: int = Field(default=200, ge=0)  # Monte Carlo draws allowed without an API key
    # stored runs of profiles that are not bundled (scenarios posted to /v1/scores, `raices score --profile F`):
    # at most this many, none older than this; runs of bundled profiles are kept, one per data epoch
    scenario_runs_max: int = Field(default=200, ge=1)
    scenario_runs_max_age_hours: float = Field(default=168.0, gt=0)
    # a new scenario is computed by a job (app/jobs.py); POST /v1/scores waits this long for it, then answers
    # 202 with a job to poll. 30 s: a new scenario took about 10 s when this was set, so clients get their
    # 200 as before, and it stays under the 60 s of common proxy timeouts
    scenario_wait_seconds: float = Field(default=30.0, ge=0)
    inprocess_worker: bool = True  # run a job worker inside each API process (else: `raices worker`)
    worker_concurrency: int = Field(default=1, ge=1)  # jobs one worker computes at once
    log_format: str = Field(default="text", pattern="^(text|json)$")
    upload_max_uncompressed_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)

    @field_validator("data_mirror", mode="before")
    @classmethod
    def _empty_mirror_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @model_validator(mode="after")
    def _default_limit_within_max(self) -> Settings:
        if self.default_limit > self.max_limit:
            raise ValueError(
                f"RAICES_DEFAULT_LIMIT ({self.default_limit}) must not exceed RAICES_MAX_LIMIT ({self.max_limit})"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
