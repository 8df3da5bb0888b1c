"""Pydantic models of what the planner API (/v1, /health, /ready, /tiles) answers, for its OpenAPI document.

Documentation, not runtime validation: routes return ORJSONResponse over plain dicts (speed, issue 14) and
declare these models in `responses=` (through `media(..., model=)`), so FastAPI writes them into
/openapi.json without checking anything at run time. The schemathesis run (tests/test_fuzz.py) then checks
every response against them: the models forbid extra members so that a renamed, added or wrong-typed field
fails a test instead of drifting silently. Where a member is an open document (a fitted model, a
sensitivity analysis, a validation report's figures), it is typed as an object and described.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.scoring.profile import Profile


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Count = Annotated[int, Field(ge=0)]
Score = Annotated[float, Field(ge=0, le=100)]


class Page(_Strict):
    """The envelope of every list: the number matched, the page size and offset asked for, and the items."""

    total: Count
    limit: Count
    offset: Count


# --- health -------------------------------------------------------------------------------------------


class DatabaseState(_Strict):
    """The database as /health and /ready see it."""

    reachable: bool
    postgis: str | None = None
    revision: str | None = None
    units: Count | None = None


class Health(_Strict):
    """Liveness: the service's version and the database's state."""

    status: Literal["ok", "unavailable"]
    version: str
    database: DatabaseState


class Ready(_Strict):
    """Readiness, and what stands in the way when not ready."""

    ready: bool
    database: DatabaseState | None = None
    problems: list[str] | None = None
    reason: str | None = None


# --- countries and municipios ---------------------------------------------------------------------------


class BoundarySetSummary(_Strict):
    """A boundary set of a country with its unit counts."""

    id: str
    title: str
    is_default: bool
    departments: Count
    municipalities: Count
    loaded_at: str


class Country(_Strict):
    """A country with its boundary sets, the default first."""

    iso3: str
    name: str
    boundary_sets: list[BoundarySetSummary]


class Countries(Page):
    """The three countries."""

    items: list[Country]


class Department(_Strict):
    """A municipio's department."""

    pcode: str | None
    name: str | None
    national_code: str | None = None


class Municipality(_Strict):
    """A municipio (or SLV distrito) in a list."""

    pcode: str
    national_code: str
    name: str
    country: str
    level: int
    boundary_set: str
    department: Department
    area_km2: float
    centroid: Annotated[list[float], Field(min_length=2, max_length=2)]


class Municipalities(Page):
    """A page of municipios."""

    items: list[Municipality]


class BoundarySetRef(_Strict):
    """The boundary set of one municipio."""

    id: str
    title: str
    pcode_convention: str
    is_default: bool


class SourceRef(_Strict):
    """A source as provenance: who published it, under what licence, how to cite it."""

    id: str
    title: str
    publisher: str
    homepage: str | None
    licence: str
    citation: str


class Provenance(_Strict):
    """Where a boundary came from: the source, its files (with sha256) and when it was loaded."""

    source: SourceRef
    files: list[dict[str, Any]] = Field(description="The files read, each with its name and sha256")
    loaded_at: str


class CrosswalkPartner(_Strict):
    """A unit of another boundary set overlapping this one, with the shares of area each way."""

    set: str
    pcode: str
    name: str
    share_of_this: float
    share_of_other: float


class SourceName(_Strict):
    """A source's id and title."""

    id: str
    title: str


class UnitValue(_Strict):
    """One indicator's latest value for a municipio."""

    code: str
    name_en: str
    name_es: str
    theme: str
    direction: int
    unit: str
    value: float | None
    period: str
    flags: list[str]
    sample_size: float | None
    publisher: str | None
    source: SourceName


class MunicipalityDetail(Municipality):
    """One municipio with its boundary set, geometry, provenance, crosswalk partners and indicator values."""

    boundary_set: BoundarySetRef  # type: ignore[assignment]
    geometry: dict[str, Any] = Field(description="GeoJSON geometry (MultiPolygon, EPSG:4326)")
    provenance: Provenance
    crosswalk: list[CrosswalkPartner]
    indicators: list[UnitValue]


# --- priorities -----------------------------------------------------------------------------------------


class ProfileRef(_Strict):
    """The profile a result was computed with (its hash names the exact weights)."""

    id: str
    hash: str
    title: str | None = None


class DepartmentRef(_Strict):
    """A priority item's department."""

    pcode: str | None
    name: str | None


class TopIndicator(_Strict):
    """An indicator among the three that contribute most to a municipio's score."""

    model_config = ConfigDict(extra="allow")

    code: str
    value: float | None = None
    normalised: float | None = None
    contribution: float | None = None


class PriorityItem(_Strict):
    """One municipio's priority (app/scoring/read.py `item`): null score, ranks, tier and pillars when it is
    not ranked (`ranked` false, with `not_ranked_reason`)."""

    pcode: str
    name: str
    country: str
    boundary_set: str
    department: DepartmentRef
    score: Score | None
    rank: int | None
    rank_region: int | None
    rank_interval: Annotated[list[int], Field(min_length=2, max_length=2)] | None
    rank_median: float | None
    p_top: Annotated[float, Field(ge=0, le=1)] | None
    robust: bool | None
    tier: int | None
    pillar: str | None
    pillar_secondary: str | None
    pillar_scores: dict[str, float | None] = Field(description="Pillar → sub-score 0-100 (null: no data)")
    pillar_ranks: dict[str, int | None] = Field(description="Pillar → rank in its country (1 = most severe)")
    migration: float | None
    top_indicators: list[TopIndicator]
    hotspot: str | None
    hotspot_confidence: int | None
    zone: str | None
    coverage: float | None
    driver_coverage: float | None
    ranked: bool
    not_ranked_reason: str | None
    vintage: list[str]


class Priorities(Page):
    """A page of priorities with the profile they were computed with."""

    profile: ProfileRef
    items: list[PriorityItem]


class Similar(_Strict):
    """A municipio of the same country with a similar pillar and migration profile."""

    pcode: str
    name: str
    score: float | None
    rank: int | None
    pillar: str | None
    distance: float


class Explanation(PriorityItem):
    """Why a municipio ranks where it does: its priority item and the five most similar municipios."""

    profile: ProfileRef
    similar: list[Similar]


class Zone(_Strict):
    """A programme zone: contiguous tier-1 or hot-spot municipios."""

    zone: str
    country: str
    units: Count
    members: list[str]
    mean_score: float | None
    max_score: float | None
    area_km2: float | None
    pillar: str | None
    bbox: list[float | None]


class Zones(Page):
    """The zones of a profile's run."""

    profile: ProfileRef
    items: list[Zone]


class ProfileEntry(_Strict):
    """A scoring profile: its id, hash and the spec POST /v1/scores accepts."""

    id: str
    hash: str
    spec: Profile


class Profiles(Page):
    """The bundled profiles."""

    items: list[ProfileEntry]


class ProfileDetail(ProfileEntry):
    """A profile and, for a fitted (empirical) one, its fit per country."""

    fit: dict[str, Any] | None = Field(
        default=None,
        description="Empirical profiles: per country status, units with an outcome, out-of-sample Spearman "
        "and R², penalty, coefficients, drivers left out; and the vintage of every indicator",
    )


class Sensitivity(_Strict):
    """How much each weight moves the ranking, and the shares of rank variance by source of uncertainty."""

    profile: ProfileRef
    method: str
    factors: list[dict[str, Any]] = Field(description="Per weight: its nominal value and influence")
    variance_shares: dict[str, Any] | None = None


class JobError(_Strict):
    """Why a scenario job failed."""

    code: str
    description: str


class ScoreJob(_Strict):
    """A scenario being computed: poll `location` until it answers with the result."""

    job: int
    status: str
    hash: str
    sets: list[str] | None
    location: str
    error: JobError | None = None


# --- baselines ------------------------------------------------------------------------------------------


class ProfileHash(_Strict):
    """A profile's id and hash."""

    id: str
    hash: str


class Baseline(_Strict):
    """A frozen score run: the profile, the data version and epoch, the run, the boundary sets."""

    name: str
    description: str
    profile: ProfileHash
    data_version: str
    epoch: int
    run: int
    sets: list[str]
    created_at: str


class BaselineCreated(Baseline):
    """A baseline just frozen, with its URL."""

    location: str


class Baselines(Page):
    """The stored baselines, newest first."""

    items: list[Baseline]


class BaselineDeleted(_Strict):
    """The baseline that was deleted."""

    deleted: Baseline


class Standing(_Strict):
    """A municipio's priority on one side of a comparison."""

    ranked: bool | None
    score: float | None
    rank: int | None
    tier: int | None
    pillar: str | None


class Change(_Strict):
    """Now against then: positive is more priority (score now − then, rank then − now, tier then − now)."""

    score: float | None
    rank: int | None
    tier: int | None
    pillar: bool | None


class IndicatorMoved(_Strict):
    """An indicator whose value, period or contribution changed since the baseline."""

    code: str
    value_then: float | None
    value_now: float | None
    period_then: str | None
    period_now: str | None
    contribution_then: float | None
    contribution_now: float | None
    contribution_change: float | None
    normalised_change: float | None


class PriorityChange(_Strict):
    """One municipio then and now."""

    pcode: str
    name: str
    country: str
    department: DepartmentRef
    boundary_set: str
    then: Standing
    now: Standing
    change: Change
    indicators_moved: list[IndicatorMoved]


class ComparedNow(_Strict):
    """The side compared with the baseline: the profile, data version and run today."""

    profile: ProfileHash
    data_version: str
    run: int


class PriorityChanges(Page):
    """What changed in the priorities since a baseline."""

    baseline: Baseline
    now: ComparedNow
    counts: dict[str, int] = Field(description="Municipios whose rank, tier, pillar or ranking changed")
    items: list[PriorityChange]


# --- sources, indicators, values ------------------------------------------------------------------------


class Source(_Strict):
    """A data source (or a user's upload) with its files and what has been loaded."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: str
    title: str
    publisher: str
    homepage: str | None
    licence: str
    citation: str
    loaded_at: str | None
    files: list[dict[str, Any]]


class Sources(Page):
    """Every source."""

    items: list[Source]


class Indicator(_Strict):
    """An indicator of the catalogue with its coverage per country."""

    code: str
    name_en: str
    name_es: str
    theme: str
    direction: int
    measure: str
    unit: str
    period: str
    publisher: str | None
    valid_range: list[float | None] | None
    description: str
    source: SourceName
    coverage: dict[str, list[dict[str, Any]]] = Field(description="Country → coverage per boundary set")


class ThemeCoverage(_Strict):
    """A pillar's (or migration's) data in one country; `status` "no data" where it has none."""

    status: str
    municipal_indicators: list[str]
    department_indicators: list[str]
    units_with_data: Count
    units: Count
    share: float | None


class Indicators(Page):
    """The indicator catalogue, and the coverage per country and pillar."""

    items: list[Indicator]
    coverage: dict[str, dict[str, ThemeCoverage]]


class IndicatorDefinition(_Strict):
    """The definition of the indicator whose values are listed."""

    code: str
    name_en: str
    name_es: str
    theme: str
    direction: int
    unit: str
    measure: str
    period: str
    publisher: str | None
    source_id: str


class IndicatorValue(_Strict):
    """One municipio's value of an indicator (null with a flag when the source marks it missing)."""

    pcode: str
    name: str
    country: str
    level: int
    boundary_set: str
    value: float | None
    period: str
    flags: list[str]
    sample_size: float | None


class IndicatorValues(Page):
    """An indicator's values, the period shown and the periods there are."""

    indicator: IndicatorDefinition
    period: str
    periods: list[str]
    items: list[IndicatorValue]


class SeriesUnit(_Strict):
    """The municipio of a series."""

    pcode: str
    name: str
    country: str
    boundary_set: str


class SeriesIndicator(_Strict):
    """The indicator of a series."""

    code: str
    name_en: str
    name_es: str
    theme: str
    direction: int
    unit: str
    measure: str
    description: str
    vintage: str
    publisher: str | None


class SeriesSource(_Strict):
    """The source of a series."""

    id: str
    title: str
    publisher: str
    citation: str
    loaded_at: str | None


class SeriesPoint(_Strict):
    """One period of a series (file and load time null for a value derived through the crosswalk)."""

    period: str
    value: float | None
    flags: list[str]
    sample_size: float | None
    file_sha256: str | None
    loaded_at: str | None


class Series(_Strict):
    """Every period of one indicator for one municipio, oldest first."""

    unit: SeriesUnit
    indicator: SeriesIndicator
    source: SeriesSource
    total: Count
    items: list[SeriesPoint]


# --- hazards --------------------------------------------------------------------------------------------


class Storm(_Strict):
    """A storm with its peak wind and time span."""

    storm_id: str
    name: str
    year: int
    start_time: str
    end_time: str
    max_wind_kt: float | None
    min_pressure_mb: float | None
    fixes: Count
    source: str


class Storms(Page):
    """A page of storms."""

    items: list[Storm]


class Fix(_Strict):
    """A six-hourly best-track fix."""

    time: str
    record: str | None
    status: str | None
    wind_kt: float | None
    pressure_mb: float | None
    r34_nmi: float | None
    r64_nmi: float | None
    rmw_nmi: float | None
    lon: float
    lat: float


class StormDetail(Storm):
    """A storm, its track and every fix."""

    track: dict[str, Any] = Field(description="GeoJSON LineString")
    fix_list: list[Fix]


class EventFilters(_Strict):
    """The filters an events list applied."""

    country: str | None
    boundary_set: str | None
    pcode: str | None
    type: str | None
    hydromet: bool | None
    year_from: int | None
    year_to: int | None


class EventSummary(_Strict):
    """The records of one event type and their toll."""

    event_type: str
    hydromet: bool
    records: Count
    deaths: float
    victims: float
    affected: float
    first_year: int | None
    last_year: int | None


class Event(_Strict):
    """A disaster record (DesInventar), matched to a municipio when it names one."""

    serial: str
    event_type: str
    hydromet: bool
    date: str | None
    year: int | None
    department_name: str | None
    municipio_name: str | None
    boundary_set: str | None
    pcode: str | None
    unit_name: str | None
    place: str | None
    deaths: float | None
    injured: float | None
    missing: float | None
    houses_destroyed: float | None
    houses_affected: float | None
    victims: float | None
    affected: float | None
    glide: str | None
    source: str


class Events(Page):
    """A page of disaster records, the filters, a summary per type and the sources' provenance."""

    filters: EventFilters
    by_type: list[EventSummary]
    sources: list[dict[str, Any]]
    items: list[Event]


# --- validation, uploads, tiles -------------------------------------------------------------------------


class ValidationReport(_Strict):
    """How far a profile's ranking agrees with a reference table (app/validation.py `compare`)."""

    reference: dict[str, Any]
    profile: dict[str, Any]
    options: dict[str, Any]
    matched: Count
    unmatched: list[dict[str, Any]]
    not_ranked: list[str]
    no_population: list[str]
    countries: dict[str, dict[str, Any]] = Field(description="Country → the agreement figures")
    method: dict[str, str] = Field(description="Figure → how it is computed")
    stored: Literal[False]


class UploadReport(_Strict):
    """What an upload stored: values per indicator, flagged values, notes and warnings."""

    source_id: str
    status: str
    values: dict[str, int]
    flagged: dict[str, dict[str, int]]
    notes: list[str]
    warnings: list[str]
    seconds: float


class DeletedUpload(_Strict):
    """A user layer that was deleted: its indicator, source, how many values went and the new data epoch."""

    indicator: str
    source_id: str
    values: int
    epoch: int


class UploadDeleted(_Strict):
    """The user layer that was deleted."""

    deleted: DeletedUpload


class VectorLayer(_Strict):
    """The layer of a vector tile collection and its fields."""

    id: str
    description: str
    fields: dict[str, str]
    minzoom: int
    maxzoom: int


class TileJSON(_Strict):
    """TileJSON 3.0.0 of a vector tile collection."""

    tilejson: Literal["3.0.0"]
    name: str
    description: str
    attribution: str
    scheme: Literal["xyz"]
    tiles: list[str]
    minzoom: int
    maxzoom: int
    bounds: Annotated[list[float], Field(min_length=4, max_length=4)]
    center: Annotated[list[float], Field(min_length=3, max_length=3)]
    vector_layers: list[VectorLayer]
