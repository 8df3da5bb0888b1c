"""Which source loads how: the entry points used by the CLI, the API and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from app.errors import SourceError
from app.ingest.a2sit import prepare_a2sit
from app.ingest.boundaries import BOUNDARY_LOADERS, LOADED_WITH
from app.ingest.census import prepare_department_census, prepare_hnd_emr, prepare_slv_census
from app.ingest.common import Progress, no_progress
from app.ingest.desinventar import prepare_desinventar
from app.ingest.dry_corridor import prepare_dry_corridor
from app.ingest.gtm_mvi import prepare_gtm_population
from app.ingest.hazards import prepare_hurricanes
from app.ingest.iudpas import prepare_iudpas
from app.ingest.layers import Indicator, Layer, LayerReport, indicator_definition, load_catalogue, store_layer
from app.ingest.segeplan import prepare_segeplan_pdh
from app.ingest.series import SERIES_INDICATORS
from app.ingest.slv_censo2007 import prepare_slv_censo2007
from app.ingest.store import LoadReport, store
from app.settings import Settings
from app.sources import Resolver, Source, load_manifest

LayerPreparer = Callable[
    [Connection, Settings, dict[str, Source], Resolver, dict[str, Indicator], Progress], Layer
]


def _a2sit(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """The Guatemala template, dated and attributed by UNHCR Guatemala's MVI metadata (gtm-mvi-unhcr)."""
    return prepare_a2sit(
        conn, sources["gtm-a2sit"], resolver, catalogue, progress, metadata=sources.get("gtm-mvi-unhcr")
    )


# indicator and hazard sources, loaded after the boundaries, in this order
# (populations first: later loaders use them as denominators and cross-checks)
LAYER_LOADERS: dict[str, LayerPreparer] = {
    "gtm-mvi-unhcr": prepare_gtm_population,
    "gtm-a2sit": _a2sit,
    "gtm-segeplan-pdh": prepare_segeplan_pdh,
    "gtm-desinventar": prepare_desinventar,
    "hnd-iudpas-2014": prepare_iudpas,
    "slv-censo2024": prepare_slv_census,
    "slv-censo2007": prepare_slv_censo2007,
    "slv-dry-corridor-mag": prepare_dry_corridor,
    "hnd-emr2023": prepare_hnd_emr,
    "department-census": prepare_department_census,
    "hurdat2-dplyr": prepare_hurricanes,
}

Report = LoadReport | LayerReport


def loadable_ids() -> list[str]:
    """Source ids `raices load` accepts, in load order."""
    return [*BOUNDARY_LOADERS, *LAYER_LOADERS]


def load_source(
    bind: Engine | Connection,
    settings: Settings,
    source_id: str,
    *,
    force: bool = False,
    progress: Progress = no_progress,
    sources: dict[str, Source] | None = None,
) -> Report:
    """Resolve, read, clean, validate and store one source; raises a clear error and stores nothing on failure."""
    sources = sources if sources is not None else load_manifest(settings.manifest)
    loader_id = LOADED_WITH.get(source_id, source_id)
    started = time.perf_counter()
    report: Report
    if loader_id in BOUNDARY_LOADERS:
        prepared = BOUNDARY_LOADERS[loader_id](sources, Resolver(settings), progress)
        progress("storing")
        report = store(bind, prepared, force=force)
    elif loader_id in LAYER_LOADERS:
        catalogue = load_catalogue(settings.indicator_catalogue)
        if isinstance(bind, Connection):
            layer = LAYER_LOADERS[loader_id](bind, settings, sources, Resolver(settings), catalogue, progress)
        else:
            with bind.connect() as conn:
                layer = LAYER_LOADERS[loader_id](
                    conn, settings, sources, Resolver(settings), catalogue, progress
                )
        progress("storing")
        report = store_layer(bind, layer, force=force)
    else:
        known = ", ".join(loadable_ids())
        if source_id in sources:
            raise SourceError(
                f"Source '{source_id}' is in the manifest but has no loader yet; loadable: {known}."
            )
        raise SourceError(f"Unknown source '{source_id}'; loadable sources: {known}, or 'all'.")
    report.seconds = time.perf_counter() - started
    return report


def loaded_source_ids(bind: Engine | Connection) -> set[str]:
    """Ids of the sources whose files are recorded as loaded."""
    sql = text("SELECT DISTINCT source_id FROM source_files")
    if isinstance(bind, Connection):
        return set(bind.execute(sql).scalars())
    with bind.connect() as conn:
        return set(conn.execute(sql).scalars())


def catalogue_changed(bind: Engine | Connection, settings: Settings) -> set[str]:
    """Ids of the loaded sources whose catalogue rows (geodata/indicators.csv, and the series declared in
    `app.ingest.series`, which also count when not stored yet) differ from the stored definitions of their
    indicators: names, unit, theme, direction, measure, valid range, description, source.
    Period and publisher are left out: some loaders set them from the data (the MVI metadata dates A2SIT's)."""
    catalogue = {**load_catalogue(settings.indicator_catalogue), **SERIES_INDICATORS}
    sql = text("""
        SELECT code, name_es, name_en, unit, theme, direction, measure, valid_min, valid_max, description,
               source_id FROM indicators""")
    if isinstance(bind, Connection):
        rows = bind.execute(sql).all()
    else:
        with bind.connect() as conn:
            rows = conn.execute(sql).all()
    stored = {r[0]: tuple(r) for r in rows}
    changed = {
        ind.source_id
        for ind in catalogue.values()
        if ind.code in stored and stored[ind.code] != indicator_definition(ind)[:11]
    }
    # a series or trend declared in code that a loaded source does not store yet (added by an upgrade)
    changed |= {ind.source_id for ind in SERIES_INDICATORS.values() if ind.code not in stored}
    return changed & loaded_source_ids(bind)


def load_all(
    bind: Engine | Connection,
    settings: Settings,
    *,
    force: bool = False,
    missing_only: bool = False,
    progress: Progress = no_progress,
) -> list[Report]:
    """Load every bundled source in order (with `missing_only`, those never loaded and those whose indicator
    definitions in the catalogue differ from the stored ones, so that `make run` picks up a catalogue change)."""
    sources = load_manifest(settings.manifest)
    done = loaded_source_ids(bind) - catalogue_changed(bind, settings) if missing_only else set()
    return [
        load_source(bind, settings, sid, force=force, progress=progress, sources=sources)
        for sid in loadable_ids()
        if sid not in done
    ]
