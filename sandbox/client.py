"""A Python client for Veil's API, for enterprises, providers, operators and officers.

Used by the CLI and the demo.  Every method returns the decoded JSON body;
every error answer raises :class:`ApiError` carrying the server's message,
reasons (for denials) and problems (for invalid uploads).
"""

from __future__ import annotations

import functools
import io
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx

FINAL_JOB_STATUSES = frozenset({"released", "failed", "denied"})
#: How long one request of ``wait_for_job`` waits on the server (which allows at most
#: ``JOB_WAIT_MAX_S``), and how much sooner than the client's read timeout it must answer.
JOB_WAIT_S = 20.0
JOB_WAIT_MAX_S = 30.0
JOB_WAIT_MARGIN_S = 5.0
_UPLOAD_CHUNK = 1 << 20

Progress = Callable[[int, int], None]  # (done, total)


def _document(aggregates: list[dict[str, Any]], group_by: str | list[str] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"aggregates": aggregates}
    if group_by:
        doc["group_by"] = [group_by] if isinstance(group_by, str) else list(group_by)
    return doc


class ApiError(Exception):
    """An error answer from the API: its status, stable ``code`` (when the server sends
    one) and ``message`` in the language asked for (else its ``detail``)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.detail = str(body.get("detail", "error"))
        self.code: str | None = body.get("code") if isinstance(body.get("code"), str) else None
        message = body.get("message")
        self.message = message if isinstance(message, str) and message else self.detail
        self.reasons: list[str] = list(body.get("reasons") or [])
        self.problems: list[dict[str, Any]] = list(body.get("problems") or [])
        self.job_id: str | None = body.get("job_id")
        super().__init__(f"{status}: {self.detail}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error a response carries; a body that is not a JSON object (a proxy's page)
        becomes its first 200 characters."""
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:200] or response.reason_phrase}
        return cls(response.status_code, body if isinstance(body, dict) else {})


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """httpx's default verifying context (the CA bundle, ``SSL_CERT_FILE``/``SSL_CERT_DIR``
    as httpx reads them), made once a process: loading the CA bundle costs about 60 ms,
    and every client made its own. Contexts are safe to share between clients and threads."""
    return httpx.create_ssl_context()


class VeilClient:
    """One authenticated connection to a Veil server."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        language: str | None = None,
    ) -> None:
        """``language`` (a BCP 47 tag, e.g. ``zh-CN``) is sent as ``Accept-Language``: the
        server's error messages come back in it."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if language:
            headers["Accept-Language"] = language
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=_default_tls(),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VeilClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response.json() if response.content else None

    def _download(self, path: str, params: dict[str, Any] | None = None) -> bytes:
        """A binary body (mock data, model weights); errors are JSON like everywhere else."""
        response = self._http.get(path, params=params)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response.content

    # -- everyone -----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/health"))

    def me(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/me"))

    # -- operator -------------------------------------------------------------------------
    def create_enterprise(self, name: str, slug: str, **categories: str | None) -> dict[str, Any]:
        """An enterprise; ``categories``: its industry, district, size_band (any of them)."""
        body = {"name": name, "slug": slug, **categories}
        return dict(self._call("POST", "/v1/enterprises", json=body))

    def set_categories(self, enterprise_id: str, **categories: str | None) -> dict[str, Any]:
        """Set an enterprise's industry, district or size_band (operator; None unsets)."""
        path = f"/v1/enterprises/{enterprise_id}/categories"
        return dict(self._call("PATCH", path, json=categories))

    def create_bureau(self, name: str) -> dict[str, Any]:
        """The programme's bureau (operator; one per programme)."""
        return dict(self._call("POST", "/v1/bureau", json={"name": name}))

    def programme_table(self, table: str, by: str = "total") -> dict[str, Any]:
        """One of the bureau's programme tables (docs/programme.md)."""
        return dict(self._call("GET", f"/v1/programme/{table}", params={"by": by}))

    def programme_export(self, table: str, by: str = "total", fmt: str = "csv") -> bytes:
        """A programme table as CSV or XLSX."""
        return self._download(f"/v1/programme/{table}", {"by": by, "format": fmt})

    def create_node_enterprise(self, name: str, slug: str) -> dict[str, Any]:
        """An enterprise whose data lives on its own node, with its one-time enrolment code."""
        return dict(self._call("POST", "/v1/nodes", json={"name": name, "slug": slug}))

    def list_nodes(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/nodes"))

    def new_enrolment_code(self, enterprise_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/nodes/{enterprise_id}/enrolment-code"))

    def list_enterprises(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/enterprises"))

    def create_provider(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/providers", json={"name": name}))

    def list_providers(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/providers"))

    def create_security_officer(self, name: str, scope: list[str] | None = None) -> dict[str, Any]:
        body = {"name": name, "scope": scope}
        return dict(self._call("POST", "/v1/security-officers", json=body))

    def issue_token(self, principal_id: str, ttl_days: int | None = None) -> str:
        """A new token for ``principal_id`` (operator): its secret."""
        return str(self.new_token(principal_id, ttl_days)["token"])

    def new_token(self, principal_id: str, ttl_days: int | None = None) -> dict[str, Any]:
        """A new token for ``principal_id`` (operator): secret, id and expiry."""
        body = {"ttl_days": ttl_days} if ttl_days is not None else None
        return dict(self._call("POST", f"/v1/principals/{principal_id}/tokens", json=body))

    # -- tokens: everyone's own; the operator's, everyone's ---------------------------------
    def list_tokens(self, principal_id: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/tokens", params=_params(principal_id=principal_id)))

    def revoke_token(self, token_id: str, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason is not None else None
        return dict(self._call("POST", f"/v1/tokens/{token_id}/revoke", json=body))

    def rotate_token(self, token_id: str, ttl_days: int | None = None) -> dict[str, Any]:
        """The new token (secret shown once); the old one is revoked at once."""
        body = {"ttl_days": ttl_days} if ttl_days is not None else None
        return dict(self._call("POST", f"/v1/tokens/{token_id}/rotate", json=body))

    # -- enterprise -------------------------------------------------------------------------
    def create_dataset(
        self,
        name: str,
        columns: list[dict[str, Any]],
        privacy_unit: dict[str, Any] | None = None,
        *,
        epsilon_cap: float | None = None,
        delta_cap: float | None = None,
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "columns": columns,
            "privacy_unit": privacy_unit or {},
            "epsilon_cap": epsilon_cap,
            "delta_cap": delta_cap,
        }
        return dict(self._call("POST", "/v1/datasets", json=body))

    def upload(
        self,
        dataset_id: str,
        data: bytes,
        *,
        filename: str | None = None,
        content_type: str = "text/csv",
        progress: Progress | None = None,
        encoding: str | None = None,
    ) -> dict[str, Any]:
        """Upload a version as the raw body, in chunks, reporting progress (a CSV's
        ``encoding`` detected by the server unless named)."""
        total = len(data)

        def chunks() -> Iterator[bytes]:
            for start in range(0, total, _UPLOAD_CHUNK):
                yield data[start : start + _UPLOAD_CHUNK]
                if progress:
                    progress(min(start + _UPLOAD_CHUNK, total), total)

        params = {"filename": filename} if filename else {}
        params |= {"encoding": encoding} if encoding else {}
        headers = {"Content-Type": content_type, "Content-Length": str(total)}
        return dict(
            self._call(
                "POST",
                f"/v1/datasets/{dataset_id}/versions",
                content=chunks(),
                headers=headers,
                params=params or None,
            )
        )

    def upload_file(
        self,
        dataset_id: str,
        path: Path,
        progress: Progress | None = None,
        encoding: str | None = None,
    ) -> dict[str, Any]:
        is_parquet = path.suffix.lower() in {".parquet", ".pq"}
        kind = "application/vnd.apache.parquet" if is_parquet else "text/csv"
        data = path.read_bytes()
        return self.upload(
            dataset_id,
            data,
            filename=path.name,
            content_type=kind,
            progress=progress,
            encoding=encoding,
        )

    def classification(self, dataset_id: str) -> dict[str, Any]:
        """Each column's class, MIIT data domain and GB/T 43697-2024 level."""
        return dict(self._call("GET", f"/v1/datasets/{dataset_id}/classification"))

    def classify(
        self, dataset_id: str, columns: dict[str, dict[str, str]], *, replace: bool = False
    ) -> dict[str, Any]:
        """Set some columns' domain and level (enterprise)."""
        body = {"columns": columns, "replace": replace}
        return dict(self._call("PUT", f"/v1/datasets/{dataset_id}/classification", json=body))

    def important_data(self, enterprise_id: str | None = None, fmt: str = "json") -> bytes:
        """The catalogue of important data (重要数据目录) as JSON or XLSX bytes."""
        params = {"format": fmt} | ({"enterprise_id": enterprise_id} if enterprise_id else {})
        return self._download("/v1/important-data", params)

    # -- data sources read in place (docs/sources.md) -------------------------------------
    def declare_source(
        self,
        dataset_id: str,
        kind: str,
        config: dict[str, Any],
        *,
        credentials: dict[str, str] | None = None,
        interval_s: float | None = None,
        mapping: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Declare or change a dataset's source (enterprise, on the core holding the data)."""
        body: dict[str, Any] = {"kind": kind, "config": config, "interval_s": interval_s}
        if credentials is not None:
            body["credentials"] = credentials
        if mapping is not None:
            body["mapping"] = mapping
        path = f"/v1/datasets/{dataset_id}/source"
        return dict(self._call("PUT", path, json=body)["source"])

    def map_source(self, dataset_id: str, mapping: dict[str, Any]) -> dict[str, Any]:
        """The source's next mapping version."""
        path = f"/v1/datasets/{dataset_id}/source/mapping"
        return dict(self._call("PUT", path, json=mapping)["source"])

    def source(self, dataset_id: str) -> dict[str, Any] | None:
        """The dataset's source, or None when it has none."""
        found = self._call("GET", f"/v1/datasets/{dataset_id}/source")["source"]
        return dict(found) if found is not None else None

    def sources(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/sources")["sources"])

    def run_source(self, dataset_id: str) -> dict[str, Any]:
        """Run the source now; the run's rows, version, or error."""
        return dict(self._call("POST", f"/v1/datasets/{dataset_id}/source/run")["run"])

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/datasets"))

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/datasets/{dataset_id}"))

    def create_grant(
        self,
        provider_id: str,
        dataset_ids: list[str],
        columns: list[str],
        tiers: list[int],
        purposes: list[str],
        valid_until: datetime,
        epsilon: float,
        delta: float = 0.0,
        valid_from: datetime | None = None,
    ) -> dict[str, Any]:
        body = {
            "provider_id": provider_id,
            "dataset_ids": dataset_ids,
            "columns": columns,
            "tiers": tiers,
            "purposes": purposes,
            "valid_until": valid_until.isoformat(),
            "valid_from": valid_from.isoformat() if valid_from else None,
            "epsilon": epsilon,
            "delta": delta,
        }
        return dict(self._call("POST", "/v1/grants", json=body))

    def list_grants(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/grants"))

    def get_grant(self, grant_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/grants/{grant_id}"))

    def revoke_grant(self, grant_id: str, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason else None
        return dict(self._call("POST", f"/v1/grants/{grant_id}/revoke", json=body))

    def change_grant(self, grant_id: str, reason: str, **changes: Any) -> dict[str, Any]:
        """Narrow a grant or extend its validity (columns, tiers, purposes, epsilon, delta,
        valid_until, min_group_size); ``reason`` goes into the audit log."""
        body = {
            k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in changes.items()
        } | {"reason": reason}
        return dict(self._call("PATCH", f"/v1/grants/{grant_id}", json=body))

    # -- the city's purpose vocabulary and commitment letters (docs/commitments.md) -------
    def list_purposes(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/purposes"))

    def set_purpose(
        self, code: str, name_zh: str, name_en: str, *, retired: bool = False
    ) -> dict[str, Any]:
        """Add, rename, retire or restore a purpose (operator)."""
        body = {"name_zh": name_zh, "name_en": name_en, "retired": retired}
        return dict(self._call("PUT", f"/v1/purposes/{code}", json=body))

    def register_letter_key(self, public_key_pem: str) -> dict[str, Any]:
        """Register the provider's Ed25519 public key (PEM) for signing letters."""
        body = {"public_key_pem": public_key_pem}
        return dict(self._call("POST", "/v1/letters/keys", json=body))

    def issue_letter(
        self, grant_id: str, retention_days: int, insurance_reference: str
    ) -> dict[str, Any]:
        """The enterprise issues its grant's commitment letter."""
        body = {"retention_days": retention_days, "insurance_reference": insurance_reference}
        return dict(self._call("POST", f"/v1/grants/{grant_id}/letter", json=body))

    def get_letter(self, grant_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/grants/{grant_id}/letter"))

    def letter_html(self, grant_id: str) -> bytes:
        return self._download(f"/v1/grants/{grant_id}/letter", params={"format": "html"})

    def evidence_pack(self, grant_id: str) -> dict[str, Any]:
        """The grant's signed evidence pack (letter, receipt, audit range)."""
        return dict(self._call("GET", f"/v1/grants/{grant_id}/evidence"))

    def sign_letter(self, grant_id: str, signature: str) -> dict[str, Any]:
        """Hand in the provider's signature of the letter (made with its private key)."""
        body = {"signature": signature}
        return dict(self._call("POST", f"/v1/grants/{grant_id}/letter/signature", json=body))

    # -- provider: tiers 0 and 1 ----------------------------------------------------------
    def catalog(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/catalog"))

    def mock(self, dataset_id: str, *, rows: int = 1000, seed: int = 0, fmt: str = "csv") -> bytes:
        """Mock rows generated from the declaration only (no budget)."""
        params = {"rows": rows, "seed": seed, "format": fmt}
        return self._download(f"/v1/datasets/{dataset_id}/mock", params)

    # -- provider ---------------------------------------------------------------------------
    def submit_query(
        self,
        dataset_id: str,
        purpose: str,
        query: dict[str, Any],
        *,
        tier: int = 3,
        epsilon: float = 0.0,
        delta: float = 0.0,
    ) -> dict[str, Any]:
        """Submit a job with a query document (see docs/query-examples.md)."""
        body = {
            "dataset_id": dataset_id,
            "purpose": purpose,
            "tier": tier,
            "epsilon": epsilon,
            "delta": delta,
            "query": query,
        }
        return dict(self._call("POST", "/v1/jobs", json=body))

    def submit_sql(
        self,
        sql: str,
        purpose: str,
        *,
        epsilon: float,
        delta: float = 0.0,
        dataset_id: str | None = None,
    ) -> dict[str, Any]:
        """Submit a tier-3 private query written in SQL (docs/sql.md); FROM names the
        dataset by its id or name.  The job keeps the SQL and the query it translates to."""
        body = {"purpose": purpose, "tier": 3, "epsilon": epsilon, "delta": delta, "sql": sql}
        if dataset_id is not None:
            body["dataset_id"] = dataset_id
        return dict(self._call("POST", "/v1/jobs", json=body))

    def preview_sql(
        self, sql: str, purpose: str, *, epsilon: float, delta: float = 0.0
    ) -> dict[str, Any]:
        """Cost and expected error of a tier-3 query written in SQL; spends nothing."""
        body = {"purpose": purpose, "tier": 3, "epsilon": epsilon, "delta": delta, "sql": sql}
        return dict(self._call("POST", "/v1/jobs/preview", json=body))

    def translate_sql(self, sql: str) -> dict[str, Any]:
        """The dataset and the query document an SQL query translates to; submits nothing."""
        return dict(self._call("POST", "/v1/queries/translate", json={"sql": sql}))

    def submit_job(
        self,
        dataset_id: str,
        purpose: str,
        epsilon: float,
        aggregates: list[dict[str, Any]],
        group_by: str | list[str] | None = None,
        delta: float = 0.0,
    ) -> dict[str, Any]:
        """Submit a tier-3 private query built from aggregates and optional group keys."""
        return self.submit_query(
            dataset_id, purpose, _document(aggregates, group_by), epsilon=epsilon, delta=delta
        )

    def submit_table(
        self,
        dataset_id: str,
        purpose: str,
        aggregates: list[dict[str, Any]],
        group_by: str | list[str] | None = None,
    ) -> dict[str, Any]:
        """Submit a tier-2 aggregate table (perturbed and checked by disclosure control, no
        epsilon)."""
        return self.submit_query(dataset_id, purpose, _document(aggregates, group_by), tier=2)

    def preview(
        self,
        dataset_id: str,
        purpose: str,
        query: dict[str, Any],
        *,
        epsilon: float = 0.0,
        delta: float = 0.0,
        tier: int = 3,
    ) -> dict[str, Any]:
        """Cost and expected error of a tier-3 query (or, ``tier=2``, a table); spends
        nothing."""
        body = {
            "dataset_id": dataset_id,
            "purpose": purpose,
            "tier": tier,
            "epsilon": epsilon,
            "delta": delta,
            "query": query,
        }
        return dict(self._call("POST", "/v1/jobs/preview", json=body))

    def preview_table(
        self,
        dataset_id: str,
        purpose: str,
        aggregates: list[dict[str, Any]],
        group_by: str | list[str] | None = None,
    ) -> dict[str, Any]:
        """The rules and the accuracy (cell-key perturbation) of a tier-2 table; reads no
        data."""
        return self.preview(dataset_id, purpose, _document(aggregates, group_by), tier=2)

    def query_schema(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/schemas/query"))

    def submit_training(
        self,
        dataset_id: str,
        purpose: str,
        training: dict[str, Any],
        *,
        epsilon: float,
        delta: float,
    ) -> dict[str, Any]:
        """Submit a tier-4 DP training job (see docs/training.md for the document)."""
        return self.submit_query(
            dataset_id, purpose, training, tier=4, epsilon=epsilon, delta=delta
        )

    def preview_training(
        self,
        dataset_id: str,
        purpose: str,
        training: dict[str, Any],
        *,
        epsilon: float,
        delta: float,
    ) -> dict[str, Any]:
        """Noise multiplier and expected epsilon of a training job; spends nothing."""
        body = {
            "dataset_id": dataset_id,
            "purpose": purpose,
            "tier": 4,
            "epsilon": epsilon,
            "delta": delta,
            "query": training,
        }
        return dict(self._call("POST", "/v1/jobs/preview", json=body))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def download_model(self, job_id: str) -> tuple[bytes, dict[str, Any]]:
        """The released model's weights (safetensors) and its card."""
        weights = self._download(f"/v1/jobs/{job_id}/model")
        return weights, dict(self.get_result(job_id)["card"])

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/jobs"))

    def get_job(self, job_id: str, *, wait: float = 0.0) -> dict[str, Any]:
        """The job; with ``wait`` (seconds, at most 30), answered when it ends or when
        ``wait`` has passed, whichever comes first."""
        params = {"wait": wait} if wait else None
        return dict(self._call("GET", f"/v1/jobs/{job_id}", params=params))

    def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float = 300.0,
        poll: float = 0.2,
        wait: float = JOB_WAIT_S,
        on_status: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """The job once it is released, failed, denied or held (tier 5); TimeoutError after
        ``timeout`` s.

        Each request waits on the server for up to ``wait`` s (``GET /v1/jobs/{id}?wait=``,
        a long poll: answered when the job ends), so a job is one request per ``wait`` s;
        ``on_status`` sees the job after each.  ``poll``: the least time between requests
        (a server that answers a wait at once is not asked again sooner).  ``wait`` is
        kept under the client's read timeout.
        """
        deadline = time.monotonic() + timeout
        wait = min(wait, JOB_WAIT_MAX_S)
        read_timeout = self._http.timeout.read
        if read_timeout is not None:
            wait = min(wait, max(0.0, read_timeout - JOB_WAIT_MARGIN_S))
        while True:
            asked = time.monotonic()
            seconds = round(max(0.0, min(wait, deadline - asked)), 3)
            job = self.get_job(job_id, wait=seconds)
            if on_status:
                on_status(job)
            if job["status"] in FINAL_JOB_STATUSES or job["status"] == "held":
                return job  # "held": a tier-5 output waits for its enterprise
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(max(0.0, min(poll - (now - asked), deadline - now)))

    def get_result(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}/result"))

    # -- tier 5: reviewed code --------------------------------------------------------------
    def try_code_on_mock(self, dataset_id: str, source: str, rows: int = 200) -> object:
        """Run a syft function locally, through PySyft, on the dataset's mock (tier 1):
        what to do before submitting it.  Needs the ``syft`` package here."""
        import tempfile

        import polars as pl

        from analytics.syft_code import parse_submission, run_on_mock, to_pandas

        code = parse_submission(source)
        frame = pl.read_parquet(io.BytesIO(self.mock(dataset_id, rows=rows, fmt="parquet")))
        with tempfile.TemporaryDirectory(prefix="veil-syft-") as workdir:
            return run_on_mock(code, to_pandas(frame), Path(workdir))

    def submit_code(self, dataset_id: str, purpose: str, source: str) -> dict[str, Any]:
        """Submit a syft function's source for the enterprise's review (tier 5)."""
        body = {"dataset_id": dataset_id, "purpose": purpose, "source": source}
        return dict(self._call("POST", "/v1/code-requests", json=body))

    def list_code(self, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else None
        return list(self._call("GET", "/v1/code-requests", params=params))

    def get_code(self, code_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/code-requests/{code_id}"))

    def approve_code(self, code_id: str, reason: str) -> dict[str, Any]:
        body = {"reason": reason}
        return dict(self._call("POST", f"/v1/code-requests/{code_id}/approve", json=body))

    def deny_code(self, code_id: str, reason: str) -> dict[str, Any]:
        body = {"reason": reason}
        return dict(self._call("POST", f"/v1/code-requests/{code_id}/deny", json=body))

    def submit_code_job(
        self, dataset_id: str, purpose: str, code_id: str, epsilon: float = 0.0
    ) -> dict[str, Any]:
        """Run an approved code request on the data (tier 5); ``epsilon`` funds its
        ``veil_dp`` calls (needed when it reads confidential columns)."""
        return self.submit_query(
            dataset_id, purpose, {"code_request_id": code_id}, tier=5, epsilon=epsilon
        )

    def held_output(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}/held"))

    def release_held(self, job_id: str, reason: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/jobs/{job_id}/release", json={"reason": reason}))

    def reject_held(self, job_id: str, reason: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/jobs/{job_id}/reject", json={"reason": reason}))

    # -- audit (operators and security officers) ------------------------------------------------
    def audit_events(
        self,
        before_seq: int | None = None,
        limit: int = 100,
        **filters: str | datetime | None,
    ) -> list[dict[str, Any]]:
        """Events newest first; ``filters``: since, until, tenant_id, actor_id, role, action,
        outcome, resource (see docs/audit.md).  Page on with the last event's ``seq``."""
        params = _params(before_seq=before_seq, limit=limit, **filters)
        return list(self._call("GET", "/v1/audit/events", params=params))

    def audit_export(
        self,
        out: BinaryIO,
        *,
        from_seq: int | None = None,
        to_seq: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Stream a range of the log (JSON Lines with its signed manifest and checkpoints)
        into ``out``; returns the number of bytes written.  Verify it offline."""
        params = _params(from_seq=from_seq, to_seq=to_seq, since=since, until=until)
        written = 0
        with self._http.stream("GET", "/v1/audit/export", params=params) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError.from_response(response)
            for chunk in response.iter_bytes():
                out.write(chunk)
                written += len(chunk)
        return written

    def audit_public_key(self) -> str:
        """Every version of the audit signing key's public half, as PEM."""
        return self._download("/v1/audit/public-key").decode()

    def checkpoint(self) -> dict[str, Any] | None:
        result = self._call("POST", "/v1/audit/checkpoints")
        return dict(result) if result else None

    def verify_audit(self, full: bool = False) -> dict[str, Any]:
        """Verify the chain on the server: from its newest recorded full verification, or
        every event with ``full``."""
        params = {"full": "true"} if full else None
        return dict(self._call("GET", "/v1/audit/verify", params=params))

    def record_audit_verification(self) -> dict[str, Any]:
        """Have the server verify every event now and record the result, signed."""
        return dict(self._call("POST", "/v1/audit/verifications"))

    def audit_attention(self, since: datetime | None = None) -> dict[str, Any]:
        """What needs a security officer's attention: denials per provider, budget burn
        per grant, held outputs, failed logins."""
        return dict(self._call("GET", "/v1/audit/attention", params=_params(since=since)))

    def key_audit(
        self, tenant_id: str | None = None, since: datetime | None = None
    ) -> dict[str, Any]:
        """The key server's own audit log, per tenant, next to Veil's events, with the
        decryptions that no Veil job or upload explains."""
        params = _params(tenant_id=tenant_id, since=since)
        return dict(self._call("GET", "/v1/audit/keys", params=params))

    def suspend_provider(self, provider_id: str, reason: str) -> dict[str, Any]:
        """Suspend a provider: its tokens stop working and its queued jobs are cancelled."""
        body = {"reason": reason}
        return dict(self._call("POST", f"/v1/providers/{provider_id}/suspend", json=body))

    def reinstate_provider(self, provider_id: str, reason: str) -> dict[str, Any]:
        body = {"reason": reason}
        return dict(self._call("POST", f"/v1/providers/{provider_id}/reinstate", json=body))

    # -- usage receipts (enterprises; officers and operators name the enterprise) -----------------
    def usage_receipt(
        self,
        provider_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        enterprise_id: str | None = None,
    ) -> dict[str, Any]:
        """A signed receipt of what ``provider_id`` did with the enterprise's data."""
        params = _params(
            provider_id=provider_id, since=since, until=until, enterprise_id=enterprise_id
        )
        return dict(self._call("GET", "/v1/receipts", params=params))

    def usage_receipt_html(
        self,
        provider_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        enterprise_id: str | None = None,
    ) -> bytes:
        """The same receipt as a readable HTML page to hand on."""
        params = _params(
            provider_id=provider_id,
            since=since,
            until=until,
            enterprise_id=enterprise_id,
            format="html",
        )
        return self._download("/v1/receipts", params=params)

    # ------------------------------------------------------------ collaborations

    def propose_collaboration(
        self,
        title: str,
        purpose: str,
        columns: list[dict[str, str]] | None = None,
        benchmark: dict[str, Any] | None = None,
        analysis: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Propose a benchmark across enterprises, or a supply-chain analysis between two
        (``analysis``: the template), as a provider; the enterprises join on their nodes."""
        body = {"title": title, "purpose": purpose, "columns": columns, "benchmark": benchmark,
                "analysis": analysis}  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        return dict(self._call("POST", "/v1/collaborations", json=body))

    def list_collaborations(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/collaborations"))

    def get_collaboration(self, collaboration_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/collaborations/{collaboration_id}"))

    def close_collaboration(self, collaboration_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/collaborations/{collaboration_id}/close"))

    def start_collaboration_run(self, collaboration_id: str) -> dict[str, Any]:
        """Start a run over the enterprises taking part now (409 under the minimum)."""
        return dict(self._call("POST", f"/v1/collaborations/{collaboration_id}/runs"))

    def get_collaboration_run(self, collaboration_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/collaborations/{collaboration_id}/runs/{run_id}"))

    def wait_for_collaboration_run(
        self, collaboration_id: str, run_id: str, *, timeout: float = 120.0, poll: float = 0.2
    ) -> dict[str, Any]:
        """The run once it is released or failed (TimeoutError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_collaboration_run(collaboration_id, run_id)
            if run["status"] != "running":
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still running after {timeout:g} s")
            time.sleep(poll)

    # ------------------------------------------------------------ KPI contracts

    def propose_kpi_contract(self, contract: dict[str, Any]) -> dict[str, Any]:
        """Propose a KPI contract (``docs/verdicts.md``): dataset_id, purpose, kpi, target,
        confidence, epsilon, and provider_id when an enterprise proposes."""
        return dict(self._call("POST", "/v1/kpi-contracts", json=contract))

    def list_kpi_contracts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/kpi-contracts"))

    def get_kpi_contract(self, contract_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/kpi-contracts/{contract_id}"))

    def accept_kpi_contract(self, contract_id: str, terms_sha256: str) -> dict[str, Any]:
        """Accept the terms whose SHA-256 you read (the party that did not propose)."""
        body = {"terms_sha256": terms_sha256}
        return dict(self._call("POST", f"/v1/kpi-contracts/{contract_id}/accept", json=body))

    def decline_kpi_contract(self, contract_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/kpi-contracts/{contract_id}/decline"))

    def evaluate_kpi_contract(self, contract_id: str) -> dict[str, Any]:
        """Start an evaluation (it costs the contract's ε); returns it, pending."""
        return dict(self._call("POST", f"/v1/kpi-contracts/{contract_id}/evaluations"))

    def list_kpi_verdicts(self, contract_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/v1/kpi-contracts/{contract_id}/verdicts"))

    def get_kpi_verdict(self, contract_id: str, verdict_id: str) -> dict[str, Any]:
        path = f"/v1/kpi-contracts/{contract_id}/verdicts/{verdict_id}"
        return dict(self._call("GET", path))

    def wait_for_kpi_verdict(
        self, contract_id: str, verdict_id: str, *, timeout: float = 300.0, poll: float = 0.2
    ) -> dict[str, Any]:
        """The evaluation once released or failed (TimeoutError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            verdict = self.get_kpi_verdict(contract_id, verdict_id)
            if verdict["status"] != "pending":
                return verdict
            if time.monotonic() > deadline:
                raise TimeoutError(f"evaluation {verdict_id} still pending after {timeout:g} s")
            time.sleep(poll)

    # -- scorecards and exit (docs/programme.md, "Scorecards and exit") -----------------------

    def open_period(
        self, name: str, weights: dict[str, float] | None = None, pass_mark: float | None = None
    ) -> dict[str, Any]:
        """Open an evaluation period (the bureau); weights and pass mark default if unset."""
        body = _params(name=name, weights=weights, pass_mark=pass_mark)
        return dict(self._call("POST", "/v1/programme/periods", json=body))

    def list_periods(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/programme/periods"))

    def close_period(self, period_id: str) -> dict[str, Any]:
        """Close the open period: every provider's signed scorecard (the bureau)."""
        return dict(self._call("POST", f"/v1/programme/periods/{period_id}/close"))

    def assess_provider(self, provider_id: str, score: float, reason: str) -> dict[str, Any]:
        """The bureau's own score of a provider, 0-100, in the open period."""
        body = {"provider_id": provider_id, "score": score, "reason": reason}
        return dict(self._call("POST", "/v1/programme/assessments", json=body))

    # -- registered assessors (docs/programme.md, "Assessors") ---------------------------------

    def register_assessor(self, name: str) -> dict[str, Any]:
        """Register a third-party assessor (the bureau); the operator issues its token."""
        return dict(self._call("POST", "/v1/assessors", json={"name": name}))

    def list_assessors(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/assessors"))

    def suspend_assessor(self, assessor_id: str, reason: str) -> dict[str, Any]:
        """Suspend an assessor: its tokens and later assessments are refused (the bureau)."""
        path = f"/v1/assessors/{assessor_id}/suspend"
        return dict(self._call("POST", path, json={"reason": reason}))

    def reinstate_assessor(self, assessor_id: str, reason: str) -> dict[str, Any]:
        path = f"/v1/assessors/{assessor_id}/reinstate"
        return dict(self._call("POST", path, json={"reason": reason}))

    def record_assessment(self, provider_id: str, score: float, reason: str) -> dict[str, Any]:
        """An assessor's own score of a provider, 0-100, in the open period."""
        body = {"provider_id": provider_id, "score": score, "reason": reason}
        return dict(self._call("POST", "/v1/assessments", json=body))

    def own_assessments(self) -> dict[str, Any]:
        """The open period and the providers being scored, with the assessor's own scores."""
        return dict(self._call("GET", "/v1/assessments"))

    def rate_provider(self, provider_id: str, rating: int) -> dict[str, Any]:
        """An enterprise's rating (1-5) of a provider it granted, in the open period."""
        body = {"provider_id": provider_id, "rating": rating}
        return dict(self._call("POST", "/v1/programme/ratings", json=body))

    def list_scorecards(self, period_id: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/scorecards", params=_params(period_id=period_id)))

    def get_scorecard(self, scorecard_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/scorecards/{scorecard_id}"))

    def list_exits(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/exits"))

    def exited_providers(self) -> list[dict[str, Any]]:
        """Suspended and exited providers, and why (the bureau)."""
        return list(self._call("GET", "/v1/exits/providers"))

    def decide_exit(self, exit_id: str, confirm: bool, reason: str) -> dict[str, Any]:
        """Confirm or reject an exit proposal (the bureau)."""
        body = {"decision": "confirm" if confirm else "reject", "reason": reason}
        return dict(self._call("POST", f"/v1/exits/{exit_id}/decide", json=body))


def _params(**values: object) -> dict[str, Any]:
    """Query parameters without the unset ones; datetimes as ISO 8601."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in values.items()
        if value is not None
    }
