"""The database: one synchronous SQLAlchemy engine on psycopg 3, URL resolution and migrations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.engine import URL

from app.errors import DatabaseUnavailable
from app.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:  # Alembic is imported only when migrating
    from alembic.config import Config

MIGRATIONS = PROJECT_ROOT / "migrations"


def local_cluster_file(settings: Settings) -> Path:
    """Where the local cluster records how to reach it."""
    return settings.data_dir / "cluster.json"


def normalise_url(url: str | URL) -> URL:
    """Make any postgres URL use the psycopg 3 driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def database_url(settings: Settings) -> URL:
    """The URL in use: DATABASE_URL when set, else the local cluster under the data folder."""
    if settings.database_url:
        return normalise_url(settings.database_url)
    state = local_cluster_file(settings)
    if state.exists():
        return normalise_url(json.loads(state.read_text())["url"])
    raise DatabaseUnavailable(
        "No database configured: set DATABASE_URL, or run `make run` to start the local PostGIS cluster."
    )


def make_engine(settings: Settings, url: str | URL | None = None) -> Engine:
    """One engine per process: pre-ping, bounded connect and statement timeouts."""
    return create_engine(
        normalise_url(url) if url is not None else database_url(settings),
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=5,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        },
    )


@contextmanager
def transaction(bind: Engine | Connection) -> Iterator[Connection]:
    """Yield a connection inside a transaction, whether given an Engine or a Connection."""
    if isinstance(bind, Connection):
        if bind.in_transaction():
            with bind.begin_nested():
                yield bind
        else:
            with bind.begin():
                yield bind
    else:
        with bind.begin() as conn:
            yield conn


def alembic_config(url: str | URL) -> Config:
    """An Alembic config pointing at the project's migrations and the given database."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    rendered = normalise_url(url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Apply the migrations up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest migration revision in the project."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The Alembic revision the database is at, or None before any migration."""
    exists = conn.execute(text("SELECT to_regclass('public.alembic_version') IS NOT NULL")).scalar()
    if not exists:
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
