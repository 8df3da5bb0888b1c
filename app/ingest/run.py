"""Which source loads how: the entry points used by the CLI, the API and the tests."""

from __future__ import annotations

import time

from sqlalchemy import Connection, Engine, text

from app.errors import SourceError
from app.ingest.boundaries import BOUNDARY_LOADERS, LOADED_WITH
from app.ingest.common import Progress, no_progress
from app.ingest.store import LoadReport, store
from app.settings import Settings
from app.sources import Resolver, Source, load_manifest


def loadable_ids() -> list[str]:
    """Source ids `raices load` accepts, in load order."""
    return [*BOUNDARY_LOADERS, *LOADED_WITH]


def load_source(
    bind: Engine | Connection,
    settings: Settings,
    source_id: str,
    *,
    force: bool = False,
    progress: Progress = no_progress,
    sources: dict[str, Source] | None = None,
) -> LoadReport:
    """Resolve, read, clean, validate and store one source; raises a clear error and stores nothing on failure."""
    sources = sources if sources is not None else load_manifest(settings.manifest)
    loader_id = LOADED_WITH.get(source_id, source_id)
    if loader_id not in BOUNDARY_LOADERS:
        known = ", ".join(loadable_ids())
        if source_id in sources:
            raise SourceError(
                f"Source '{source_id}' is in the manifest but has no loader yet; loadable: {known}."
            )
        raise SourceError(f"Unknown source '{source_id}'; loadable sources: {known}, or 'all'.")
    started = time.perf_counter()
    prepared = BOUNDARY_LOADERS[loader_id](sources, Resolver(settings), progress)
    progress("storing")
    report = store(bind, prepared, force=force)
    report.seconds = time.perf_counter() - started
    return report


def load_all(
    bind: Engine | Connection, settings: Settings, *, force: bool = False, progress: Progress = no_progress
) -> list[LoadReport]:
    """Load every bundled boundary source, in order."""
    sources = load_manifest(settings.manifest)
    return [
        load_source(bind, settings, sid, force=force, progress=progress, sources=sources)
        for sid in BOUNDARY_LOADERS
    ]


def database_empty(bind: Engine | Connection) -> bool:
    """True when no admin unit is stored yet."""
    sql = text("SELECT EXISTS (SELECT 1 FROM admin_units)")
    if isinstance(bind, Connection):
        return not bind.execute(sql).scalar()
    with bind.connect() as conn:
        return not conn.execute(sql).scalar()
