"""Start-up (issue 14): `make run` is one serving process (`raices serve --prepare`) that migrates and loads
only what is missing, decided by queries before any loader or scoring module is imported; the API starts
without the scoring stack."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from app import cli
from app.db import current_revision, head_revision, make_engine
from app.ingest import boundaries
from app.ingest import run as ingest_run
from app.settings import Settings
from tests.conftest import PG, make_settings

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "geopandas", "rasterio", "exactextract", "libpysal", "sklearn", "scipy.stats", "SALib")


def _env(url: str, settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "RAICES_DATA_CACHE": str(settings.data_cache),
        "RAICES_RATE_LIMIT_PER_MINUTE": "0",
        "RAICES_LOG_LEVEL": "INFO",
    }


def _imported_after(code: str, env: dict[str, str]) -> list[str]:
    """The HEAVY modules loaded in a fresh interpreter after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1].split() if out.stdout.strip() else []


def test_loader_ids_agree_with_the_loaders() -> None:
    """The ids `raices load` knows without importing the loaders are the loaders' own, in the same order."""
    assert tuple(boundaries.BOUNDARY_LOADERS) == ingest_run.BOUNDARY_SOURCES
    for sid in ingest_run.LAYER_LOADERS:
        assert callable(ingest_run.layer_loader(sid)), sid
    assert ingest_run.loadable_ids()[:3] == list(boundaries.BOUNDARY_LOADERS)


def test_migration_heads_are_alembics() -> None:
    """The cheap head check of `serve --prepare` reads the migrations as Alembic does."""
    assert cli.migration_heads() == {head_revision()}


def test_the_api_starts_without_the_scoring_stack(settings: Settings, loaded_url: str) -> None:
    """create_app imports no scipy.stats, libpysal, scikit-learn, SALib, rasterio or exactextract: they are
    imported by the requests that compute (pandas and geopandas are still imported by app.indicators)."""
    code = (
        "from app.main import create_app\nfrom app.settings import get_settings\ncreate_app(get_settings())"
    )
    loaded = _imported_after(code, _env(loaded_url, settings))
    assert not set(loaded) & {"libpysal", "sklearn", "scipy.stats", "SALib", "rasterio", "exactextract"}


def test_the_check_before_serving_imports_no_loader(settings: Settings, loaded_url: str) -> None:
    """What `serve --prepare` checks before it serves (sources never loaded) is one query, with no loader
    imported; the catalogue comparison (which reads the catalogue through the loaders' code) runs after
    /health answers, and in `raices load all --missing`."""
    code = (
        "from app.cli import _missing_sources\nfrom app.db import make_engine\n"
        "from app.settings import get_settings\n"
        "assert _missing_sources(make_engine(get_settings())) == []"
    )
    assert _imported_after(code, _env(loaded_url, settings)) == []


def _stub_serving(monkeypatch: pytest.MonkeyPatch) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """`serve --prepare` with the loading and uvicorn recorded instead of run."""
    import uvicorn

    loads: list[list[str]] = []
    served: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "_load_sources", lambda engine, settings, ids, **kw: loads.append(list(ids)))
    monkeypatch.setattr(cli, "_score_when_healthy", lambda settings, url: None)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: served.append(kw))
    return loads, served


def test_prepare_migrates_and_loads_what_is_missing(
    pg: PG, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a database without migrations, `serve --prepare` migrates it to head and loads every source,
    then serves."""
    name = f"bare_{uuid4().hex[:10]}"
    url = pg.create(name)
    try:
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setattr(cli, "get_settings", lambda: make_settings(url, cache_dir))
        loads, served = _stub_serving(monkeypatch)
        result = CliRunner().invoke(cli.app, ["serve", "--prepare", "--port", "8999"])
        assert result.exit_code == 0, result.output
        engine = make_engine(make_settings(url, cache_dir), url)
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
        engine.dispose()
        assert loads == [ingest_run.loadable_ids()]
        assert len(served) == 1 and served[0]["port"] == 8999
    finally:
        pg.drop(name)


def test_prepare_loads_only_the_missing_source(
    fresh: tuple[Any, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded database missing one source: only that one is loaded; nothing is migrated."""
    engine, settings = fresh
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM source_files WHERE source_id = 'hurdat2-dplyr'"))
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr("app.db.upgrade", lambda *a: pytest.fail("migrated a database at head"))
    loads, served = _stub_serving(monkeypatch)
    result = CliRunner().invoke(cli.app, ["serve", "--prepare"])
    assert result.exit_code == 0, result.output
    assert loads == [["hurdat2-dplyr"]]
    assert "Applying the migrations" not in result.output
    assert len(served) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_prepare_serves_then_prints_the_default_top(
    settings: Settings, loaded_url: str, tmp_path: Path
) -> None:
    """`raices serve --prepare` on a loaded database (as `make run`): /health and /ready answer, then the
    default profile's top 5 per country is printed, the same municipios as /v1/priorities."""
    port = _free_port()
    raices = Path(sys.executable).with_name("raices")
    cmd = [str(raices)] if raices.exists() else [sys.executable, "-m", "app.cli"]
    stdout = tmp_path / "stdout.txt"
    with stdout.open("w") as sink:
        proc = subprocess.Popen(
            [*cmd, "serve", "--prepare", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env={**_env(loaded_url, settings), "COLUMNS": "250"},
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"{base}/health", timeout=5).status_code
                if status == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert status == 200, proc.poll()
        assert httpx.get(f"{base}/ready", timeout=30).status_code == 200
        top = httpx.get(f"{base}/v1/priorities", params={"country": "HND", "top": 5}, timeout=300).json()
        # the table comes from a thread after /health: wait for it (the run exists now)
        while time.monotonic() < deadline and "SLV" not in stdout.read_text():
            time.sleep(0.5)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    out = stdout.read_text()
    assert "Every bundled source is loaded" in out, out
    assert "Applying the migrations" not in out
    assert "profile root-causes-2021 (hash" in out, (out, err[-2000:])
    names = [i["name"] for i in top["items"]]
    assert len(names) == 5
    assert all(n in out for n in names), (names, out)
