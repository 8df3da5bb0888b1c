"""Test fixtures: a throwaway PostGIS cluster, migrated and loaded templates, an API client.

Every test database is cloned from a template (CREATE DATABASE … TEMPLATE), so a test that writes
gets its own copy and the real migrations and loaders run once per session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.cluster import Cluster, ensure_postgis, pg_bindir
from app.db import make_engine, upgrade
from app.ingest.run import load_all
from app.main import create_app
from app.settings import Settings

TEST_API_KEY = "test-key-1,test-key-2"


class PG:
    """A throwaway cluster and the databases made in it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.port = cluster.port

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            tpl = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{tpl}')
        return self.url(name)

    def drop(self, name: str) -> None:
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg() -> Iterator[PG]:
    """A PostGIS cluster in a temporary folder, destroyed at the end of the session."""
    ensure_postgis(pg_bindir(), allow_install=True)
    root = Path(tempfile.mkdtemp(prefix="raices-test-"))
    root.chmod(0o755)  # the postgres user must reach the data folder when we run as root
    cluster = Cluster(root / "cluster", dbname="postgres")
    try:
        cluster.start()
        yield PG(cluster)
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def make_settings(url: str | None, cache: Path, **kw: object) -> Settings:
    """Settings for tests: the given database, a private cache, no downloads."""
    return Settings(  # type: ignore[arg-type]
        database_url=url,
        data_cache=cache,
        raster_dir=cache / "rasters",
        allow_download=False,
        **{"rate_limit_per_minute": 0, "api_keys": TEST_API_KEY, **kw},
    )


@pytest.fixture(scope="session")
def migrated_template(pg: PG) -> str:
    """A database with the real migrations applied and nothing loaded."""
    url = pg.create("tpl_migrated")
    upgrade(url)
    return "tpl_migrated"


@pytest.fixture(scope="session")
def loaded_template(pg: PG, migrated_template: str, cache_dir: Path) -> str:
    """A migrated database with every bundled boundary source loaded from the mirror."""
    url = pg.create("tpl_loaded", template=migrated_template)
    engine = make_engine(make_settings(url, cache_dir), url)
    load_all(engine, make_settings(url, cache_dir))
    engine.dispose()
    return "tpl_loaded"


@pytest.fixture(scope="session")
def loaded_url(pg: PG, loaded_template: str) -> str:
    """A loaded database shared by read-only tests."""
    return pg.create("shared_loaded", template=loaded_template)


@pytest.fixture(scope="session")
def settings(loaded_url: str, cache_dir: Path) -> Settings:
    return make_settings(loaded_url, cache_dir)


@pytest.fixture(scope="session")
def engine(settings: Settings, loaded_url: str) -> Iterator[Engine]:
    eng = make_engine(settings, loaded_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.fixture
def fresh(pg: PG, loaded_template: str, cache_dir: Path) -> Iterator[tuple[Engine, Settings]]:
    """A private copy of the loaded database, for tests that write."""
    name = f"t_{uuid4().hex[:10]}"
    url = pg.create(name, template=loaded_template)
    s = make_settings(url, cache_dir)
    eng = make_engine(s, url)
    yield eng, s
    eng.dispose()
    pg.drop(name)


@pytest.fixture
def empty(pg: PG, migrated_template: str, cache_dir: Path) -> Iterator[tuple[Engine, Settings]]:
    """A private migrated, empty database."""
    name = f"e_{uuid4().hex[:10]}"
    url = pg.create(name, template=migrated_template)
    s = make_settings(url, cache_dir)
    eng = make_engine(s, url)
    yield eng, s
    eng.dispose()
    pg.drop(name)


@pytest.fixture(scope="session")
def live_url(settings: Settings, loaded_url: str) -> Iterator[str]:
    """The app served by uvicorn in its own process against the shared loaded database (GDAL and browsers
    need a real server; a thread would share the GIL with GDAL's reads)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **os.environ,
        "DATABASE_URL": loaded_url,
        "RAICES_DATA_CACHE": str(settings.data_cache),
        "RAICES_RASTER_DIR": str(settings.raster_dir),
        "RAICES_LOG_LEVEL": "WARNING",
        "RAICES_RATE_LIMIT_PER_MINUTE": "0",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def snapshot(engine: Engine) -> dict[str, object]:
    """Everything stored, as comparable values (loaded_at excluded where a reload may touch it)."""
    with engine.connect() as conn:
        return {
            "units": conn.execute(
                text(
                    "SELECT id, boundary_set_id, pcode, national_code, name, parent_pcode, area_km2, "
                    "md5(ST_AsBinary(geom)) FROM admin_units ORDER BY id"
                )
            ).all(),
            "sets": conn.execute(
                text("SELECT id, is_default, provenance::text, loaded_at FROM boundary_sets ORDER BY id")
            ).all(),
            "crosswalk": conn.execute(text("SELECT * FROM crosswalk ORDER BY 1, 2, 3, 4")).all(),
            "files": conn.execute(
                text("SELECT source_id, name, sha256 FROM source_files ORDER BY 1, 2")
            ).all(),
        }


def stored_observations(engine: Engine, codes: list[str] | None = None) -> list[tuple[object, ...]]:
    """Every stored value (of the given indicators) with its period, flags, sample and file, comparable
    across loads (load times excluded)."""
    where = "WHERE indicator_code = ANY(:codes)" if codes is not None else ""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT indicator_code, boundary_set_id, pcode, period, value, flags, sample_size, "
                    f"file_sha256 FROM observations {where} ORDER BY 1, 2, 3, 4"
                ),
                {"codes": codes},
            )
        ]


def values_with_flags(engine: Engine, code: str) -> dict[str, tuple[float | None, list[str], str]]:
    """One indicator's stored values by P-code: (value, flags, period)."""
    with engine.connect() as conn:
        return {
            r.pcode: (r.value, list(r.flags), r.period)
            for r in conn.execute(
                text("SELECT pcode, value, flags, period FROM observations WHERE indicator_code = :c"),
                {"c": code},
            )
        }


os.environ.setdefault("RAICES_ALLOW_DOWNLOAD", "false")
