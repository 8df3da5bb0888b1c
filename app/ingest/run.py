"""Which source loads how: the entry points used by the CLI, the API and the tests.

The loaders (pandas, geopandas, rasterio, scipy through the series) are imported when a source is loaded:
deciding what is missing (`raices load all --missing`, `raices serve --prepare`) is a query, not seconds of
imports.
"""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING, cast

from sqlalchemy import Connection, Engine, text

from app.errors import SourceError
from app.settings import Settings
from app.sources import Resolver, Source, load_manifest

if TYPE_CHECKING:
    from collections.abc import Callable

    from app.ingest.common import Progress
    from app.ingest.layers import Indicator, Layer, LayerReport
    from app.ingest.store import LoadReport

    LayerPreparer = Callable[
        [Connection, Settings, dict[str, Source], Resolver, dict[str, Indicator], Progress], Layer
    ]
    Report = LoadReport | LayerReport

# the keys of app.ingest.boundaries.BOUNDARY_LOADERS, in load order, without importing it (geopandas);
# tests/test_startup.py checks that they agree
BOUNDARY_SOURCES = ("gtm-minfin", "slv-codab-2021", "hnd-a2sit")


def _a2sit(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """The Guatemala template, dated and attributed by UNHCR Guatemala's MVI metadata (gtm-mvi-unhcr)."""
    from app.ingest.a2sit import prepare_a2sit

    return prepare_a2sit(
        conn, sources["gtm-a2sit"], resolver, catalogue, progress, metadata=sources.get("gtm-mvi-unhcr")
    )


# indicator and hazard sources, loaded after the boundaries, in this order
# (populations first: later loaders use them as denominators and cross-checks); "module:function",
# imported when the source is loaded
LAYER_LOADERS: dict[str, str] = {
    "gtm-mvi-unhcr": "app.ingest.gtm_mvi:prepare_gtm_population",
    "gtm-a2sit": "app.ingest.run:_a2sit",
    "gtm-segeplan-pdh": "app.ingest.segeplan:prepare_segeplan_pdh",
    "gtm-desinventar": "app.ingest.desinventar:prepare_desinventar",
    "hnd-iudpas-2014": "app.ingest.iudpas:prepare_iudpas",
    "slv-censo2024": "app.ingest.census:prepare_slv_census",
    "slv-censo2007": "app.ingest.slv_censo2007:prepare_slv_censo2007",
    "slv-dry-corridor-mag": "app.ingest.dry_corridor:prepare_dry_corridor",
    "hnd-emr2023": "app.ingest.census:prepare_hnd_emr",
    "department-census": "app.ingest.census:prepare_department_census",
    "hurdat2-dplyr": "app.ingest.hazards:prepare_hurricanes",
}


def layer_loader(loader_id: str) -> LayerPreparer:
    """The prepare function of an indicator or hazard source (imported now)."""
    module, name = LAYER_LOADERS[loader_id].split(":")
    return cast("LayerPreparer", getattr(importlib.import_module(module), name))


def loadable_ids() -> list[str]:
    """Source ids `raices load` accepts, in load order."""
    return [*BOUNDARY_SOURCES, *LAYER_LOADERS]


def load_source(
    bind: Engine | Connection,
    settings: Settings,
    source_id: str,
    *,
    force: bool = False,
    progress: Progress | None = None,
    sources: dict[str, Source] | None = None,
) -> Report:
    """Resolve, read, clean, validate and store one source; raises a clear error and stores nothing on failure."""
    from app.ingest.boundaries import BOUNDARY_LOADERS, LOADED_WITH
    from app.ingest.common import no_progress
    from app.ingest.layers import load_catalogue, store_layer
    from app.ingest.store import store

    progress = progress or no_progress
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
            layer = layer_loader(loader_id)(bind, settings, sources, Resolver(settings), catalogue, progress)
        else:
            with bind.connect() as conn:
                layer = layer_loader(loader_id)(
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
    from app.ingest.layers import indicator_definition, load_catalogue
    from app.ingest.series import SERIES_INDICATORS

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
    progress: Progress | None = None,
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
