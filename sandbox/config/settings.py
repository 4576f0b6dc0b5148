"""Veil's one settings object, read from ``VEIL_*`` environment variables."""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keys import CryptoProfile, KeyServerConfig, Tenancy


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/veil``, or ``~/.local/share/veil`` when that is unset."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "veil"


class Settings(BaseSettings):
    """Everything configurable, with defaults that run on one machine with no set-up.

    Read it once where the app or CLI starts and pass it down.
    """

    model_config = SettingsConfigDict(env_prefix="VEIL_", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where Veil keeps its database, encrypted objects and embedded key server.",
    )

    # Key server. Unset VEIL_VAULT_ADDR means: start and use the embedded OpenBao.
    vault_addr: str | None = Field(
        default=None,
        description="URL of an external Vault/OpenBao, or the comma-separated URLs of every "
        "node of a cluster; unset for the embedded one.",
    )
    vault_token: SecretStr | None = Field(
        default=None, description="Token for the external server."
    )
    vault_role_id: str | None = Field(
        default=None, description="AppRole role id (instead of a token)."
    )
    vault_secret_id: SecretStr | None = Field(default=None, description="AppRole secret id.")
    vault_approle_mount: str = Field(default="approle", description="Mount path of that AppRole.")
    vault_namespace: str = Field(
        default="", description="Veil's base namespace on the external server ('' for root)."
    )
    vault_tenancy: Tenancy = Field(
        default=Tenancy.AUTO,
        description="How tenants are separated: namespace, mount, or auto (detect).",
    )
    crypto_profile: CryptoProfile = Field(
        default=CryptoProfile.STANDARD,
        description="The algorithms of what is encrypted, chained and signed from now on: "
        "standard (AES-256-GCM, SHA-256, Ed25519) or gm (SM4-GCM, SM3, SM2; docs/keys.md).",
    )
    vault_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of each key-server call."
    )
    vault_failover_s: float = Field(
        default=15.0,
        ge=0,
        description="With several VEIL_VAULT_ADDR nodes: how long a call keeps trying the "
        "other nodes (leader election) before it fails closed.",
    )
    keyserver_audit_log: Path | None = Field(
        default=None,
        description="The key server's file audit log, read by `veil audit keys`; unset: the "
        "embedded server's (<data_dir>/keyserver/audit/audit.log), or none for an external one.",
    )

    # Database. Unset: SQLite (WAL) at <data_dir>/veil.db.
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the database.")
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=100,
        description="PostgreSQL: connections each of a process's two pools (writers, readers) "
        "opens at most, as needed, and keeps open; a process uses at most 2x this.",
    )

    # Uploads.
    max_upload_bytes: int = Field(
        default=256 * 2**20, gt=0, description="Largest dataset upload accepted, in bytes."
    )
    max_upload_rows: int = Field(default=10_000_000, gt=0, description="Most rows per upload.")
    max_upload_columns: int = Field(default=500, gt=0, description="Most columns per upload.")

    # Privacy: defaults and floors.
    default_dataset_epsilon_cap: float = Field(
        default=10.0,
        gt=0,
        description="Enterprise-wide epsilon cap of a new dataset (all providers).",
    )
    default_dataset_delta_cap: float = Field(
        default=1e-5, ge=0, lt=1, description="Enterprise-wide delta cap of a new dataset."
    )
    sdc_min_count_floor: int = Field(
        default=10, ge=10, description="Platform floor of tier-2 cell sizes (grants may raise it)."
    )

    # Commitment letters (docs/commitments.md).
    commitment_letters: bool = Field(
        default=True,
        description="New grants are in force only once the provider signed the enterprise's "
        "commitment letter (an installation outside a city programme may turn this off).",
    )

    # Tier 4.
    training_secure_mode: bool = Field(
        default=False,
        description="Opacus secure_mode (secure noise; slower; needs torchcsprng).",
    )

    # Audit checkpoints: signed after this many new events, or this many seconds.
    audit_checkpoint_every: int = Field(default=100, gt=0)
    audit_checkpoint_interval_s: float = Field(default=60.0, gt=0)
    # A full verification of the chain, recorded signed, this often (each worker); routine
    # verifications read only the events after it (docs/oversight.md).
    audit_verify_interval_s: float = Field(default=3600.0, gt=0)

    # Data sources read in place (sandbox.sources, docs/sources.md).
    source_poll_s: float = Field(
        default=1.0, gt=0, description="How often the source scheduler looks for due sources."
    )
    source_retry_s: float = Field(
        default=5.0, gt=0, description="A failed source's first wait before it is run again."
    )
    source_retry_max_s: float = Field(
        default=600.0, gt=0, description="The longest wait between a failing source's runs."
    )
    source_run_rows: int = Field(
        default=1_000_000, gt=0, description="Most rows one source run reads into a version."
    )
    source_lease_s: float = Field(
        default=900.0, gt=0, description="How long a source run holds its source at most."
    )
    source_hold_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a scheduler holds a continuous source between its runs without "
        "renewing (it renews at every poll); a reader whose process died is replaced after it.",
    )
    source_continuous_pause_s: float = Field(
        default=1.0, gt=0, description="The pause between two runs of a continuous source."
    )

    # Jobs.
    job_poll_interval_s: float = Field(default=0.5, gt=0, description="Worker idle poll period.")
    job_sandbox_ahead: bool = Field(
        default=True,
        description="Start the job worker's warm sandbox (the built-in job kinds) when the "
        "worker starts, so that the first job does not wait seconds for it; false: on the "
        "first job (the tests: most of them run no job).",
    )
    job_engine: Literal["embedded", "procrastinate"] = Field(
        default="embedded",
        description="Who runs queued jobs: 'embedded' (a worker thread in each server process) "
        "or 'procrastinate' (its queue on the PostgreSQL of VEIL_DATABASE_URL, run by any "
        "number of 'veil worker' processes on any machines).",
    )
    worker_heartbeat_s: float = Field(
        default=5.0, gt=0, description="How often a job worker renews its lease on its jobs."
    )
    worker_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A worker not heard of for this long is dead: its running jobs end failed.",
    )
    job_memory_mb: int = Field(
        default=8192, ge=256, description="Address-space limit of a job's sandboxed process, MiB."
    )
    job_cpu_s: int = Field(
        default=3600, ge=1, description="CPU-time limit of a job's sandboxed process, seconds."
    )
    job_wall_s: float = Field(
        default=3600.0, gt=0, description="Wall-clock limit of a job's sandboxed process, seconds."
    )
    job_tmpfs_mb: int = Field(
        default=1024,
        ge=16,
        description="Size of a job sandbox's private /tmp (memory), MiB; tier 5 keeps "
        "PySyft's copy of the data there.",
    )
    job_processes: int = Field(
        default=512,
        ge=16,
        description="Most processes and threads a job sandbox may run at once (RLIMIT_NPROC "
        "under the sandbox's own uid); stops fork bombs.",
    )

    # Console (docs/console.md).
    timezone: str = Field(
        default="Asia/Shanghai",
        description="IANA time zone the console shows and reads dates in, unless the reader "
        "chooses another (the pilot cities' zone by default).",
    )

    # API server.
    api_host: str = Field(default="127.0.0.1", description="Address `veil serve` listens on.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port `veil serve` listens on.")
    tls_cert_file: Path | None = Field(
        default=None,
        description="Certificate chain (PEM) to serve the API over TLS; with VEIL_TLS_KEY_FILE.",
    )
    tls_key_file: Path | None = Field(
        default=None, description="Private key (PEM) of that certificate; with the certificate."
    )
    tls_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted private key."
    )

    # API limits (per API process: see docs/api.md).
    max_request_bytes: int = Field(
        default=2**20, gt=0, description="Largest request body except uploads, in bytes."
    )
    rate_limit_per_s: float = Field(
        default=50.0,
        ge=0,
        description="Requests a second per token (per address without one) after the burst; "
        "0 turns the limit off.",
    )
    rate_limit_burst: int = Field(
        default=500, ge=1, description="Requests a token (or address) may send at once."
    )
    auth_failures_per_min: float = Field(
        default=60.0,
        ge=0,
        description="Failed authentications a minute per client address after the burst; "
        "0 turns the limit off.",
    )
    auth_failure_burst: int = Field(
        default=300, ge=1, description="Failed authentications an address may make at once."
    )

    # API tokens (docs/api.md, "Tokens").
    token_ttl_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="Days a new API token works (issued or rotated) unless the request asks "
        "for fewer or more (up to VEIL_TOKEN_MAX_TTL_DAYS).",
    )
    token_max_ttl_days: int = Field(
        default=365,
        ge=1,
        le=3650,
        description="The longest lifetime, in days, that issuing or rotating a token may ask for.",
    )

    @model_validator(mode="after")
    def _check_workers(self) -> Settings:
        if self.job_engine == "procrastinate" and not (self.database_url or "").startswith(
            "postgresql"
        ):
            raise ValueError(
                "VEIL_JOB_ENGINE=procrastinate keeps its queue in PostgreSQL: set "
                "VEIL_DATABASE_URL=postgresql+psycopg://USER@HOST:PORT/DB, or use the default "
                "engine 'embedded'"
            )
        if self.worker_lease_s < 3 * self.worker_heartbeat_s:
            raise ValueError(
                "VEIL_WORKER_LEASE_S must be at least three times VEIL_WORKER_HEARTBEAT_S, so "
                "that one late heartbeat does not end a live worker's jobs"
            )
        return self

    @model_validator(mode="after")
    def _check_timezone(self) -> Settings:
        if self.timezone not in zoneinfo.available_timezones():
            raise ValueError(
                "VEIL_TIMEZONE is not a time zone of the IANA database: use a name such as "
                "Asia/Shanghai or UTC"
            )
        return self

    @model_validator(mode="after")
    def _check_tokens(self) -> Settings:
        if self.token_ttl_days > self.token_max_ttl_days:
            raise ValueError(
                "VEIL_TOKEN_TTL_DAYS is longer than VEIL_TOKEN_MAX_TTL_DAYS: lower the one or "
                "raise the other"
            )
        return self

    @property
    def keyserver_home(self) -> Path:
        """Home of the embedded key server (storage, audit log, unseal key)."""
        return self.data_dir / "keyserver"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'veil.db'}"

    @property
    def objects_dir(self) -> Path:
        """Where encrypted objects (dataset versions, results) are stored."""
        return self.data_dir / "objects"

    @property
    def embedded_key_server(self) -> bool:
        return not self.vault_addr

    def external_key_server(self) -> KeyServerConfig:
        """The configuration of the external key server named by ``VEIL_VAULT_ADDR``."""
        if not self.vault_addr:
            raise ValueError("VEIL_VAULT_ADDR is not set: Veil uses its embedded key server")
        nodes = tuple(a.strip().rstrip("/") for a in self.vault_addr.split(",") if a.strip())
        if not nodes:
            raise ValueError("VEIL_VAULT_ADDR names no key-server address")
        return KeyServerConfig(
            addr=nodes[0],
            addrs=nodes if len(nodes) > 1 else (),
            failover_s=self.vault_failover_s,
            namespace=self.vault_namespace,
            token=self.vault_token.get_secret_value() if self.vault_token else None,
            role_id=self.vault_role_id,
            secret_id=self.vault_secret_id.get_secret_value() if self.vault_secret_id else None,
            approle_mount=self.vault_approle_mount,
            tenancy=self.vault_tenancy,
            timeout_s=self.vault_timeout_s,
        )
