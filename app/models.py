"""Every table (SQLAlchemy Core): the one declaration of the schema, read by the app and by Alembic.

The migrations in `migrations/versions/` create the schema; this metadata must describe what they create,
name for name (constraints, indexes, server defaults). `migrations/env.py` hands it to Alembic as
`target_metadata`, and tests/test_migrations.py runs `alembic check` (autogenerate against a freshly
migrated database) so a drift between the two fails the suite. A schema change is therefore two edits: a
new migration and the table here.

Geometry columns say `spatial_index=False` and their GiST index is an explicit `Index` with the name the
migration gave it, so GeoAlchemy2 neither invents a second index nor a name Alembic would see as new.
"""

from __future__ import annotations

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

# The strategy's pillars plus the outcome and context themes an indicator can belong to.
THEMES = "('migration', 'I', 'II', 'III', 'IV', 'V', 'context')"


def _geometry(kind: str) -> Geometry:
    """A 2-D EPSG:4326 geometry whose GiST index, if any, is declared by name beside the table."""
    return Geometry(kind, srid=4326, spatial_index=False)


# --- sources and provenance (migration 0001) ------------------------------------------------------------

sources = Table(
    "sources",
    metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("publisher", Text, nullable=False),
    Column("homepage", Text),
    Column("licence", Text, nullable=False),
    Column("citation", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True)),
)

source_files = Table(
    "source_files",
    metadata,
    Column("source_id", Text, ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("url", Text),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
)

# --- boundaries (migration 0001) ------------------------------------------------------------------------

boundary_sets = Table(
    "boundary_sets",
    metadata,
    Column("id", Text, primary_key=True),
    Column("country", String(3), nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("pcode_convention", Text, nullable=False),
    Column("is_default", Boolean, nullable=False, server_default=false()),
    Column("source_id", Text, ForeignKey("sources.id"), nullable=False),
    Column("provenance", JSONB, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
    # at most one default set per country
    Index("uq_boundary_sets_default", "country", unique=True, postgresql_where=text("is_default")),
)

admin_units = Table(
    "admin_units",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("boundary_set_id", Text, ForeignKey("boundary_sets.id", ondelete="CASCADE"), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("pcode", Text, nullable=False),
    Column("national_code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("name_key", Text, nullable=False),
    Column("country", String(3), nullable=False),
    Column("parent_pcode", Text),
    Column("source_id", Text, ForeignKey("sources.id"), nullable=False),
    Column("area_km2", Float, nullable=False),
    Column("geom", _geometry("MULTIPOLYGON"), nullable=False),
    Column("geom_simple", _geometry("MULTIPOLYGON"), nullable=False),
    UniqueConstraint("boundary_set_id", "pcode", name="uq_admin_units_set_pcode"),
    CheckConstraint("level IN (1, 2)", name="ck_admin_units_level"),
    Index("ix_admin_units_geom", "geom", postgresql_using="gist"),
    Index("ix_admin_units_geom_simple", "geom_simple", postgresql_using="gist"),
    Index("ix_admin_units_pcode", "pcode"),
    Index("ix_admin_units_country_level", "country", "level"),
)

crosswalk = Table(
    "crosswalk",
    metadata,
    Column("from_set", Text, ForeignKey("boundary_sets.id", ondelete="CASCADE"), primary_key=True),
    Column("from_pcode", Text, primary_key=True),
    Column("to_set", Text, ForeignKey("boundary_sets.id", ondelete="CASCADE"), primary_key=True),
    Column("to_pcode", Text, primary_key=True),
    Column("share_of_from", Float, nullable=False),
    Column("share_of_to", Float, nullable=False),
    Index("ix_crosswalk_to", "to_set", "to_pcode"),
)

# --- indicators and observations (migrations 0002, 0004) ------------------------------------------------

indicators = Table(
    "indicators",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name_es", Text, nullable=False),
    Column("name_en", Text, nullable=False),
    Column("unit", Text, nullable=False),
    Column("theme", Text, nullable=False),
    Column("direction", SmallInteger, nullable=False),
    Column("measure", Text, nullable=False),
    Column("valid_min", Float),
    Column("valid_max", Float),
    Column("description", Text, nullable=False, server_default=""),
    Column("source_id", Text, ForeignKey("sources.id"), nullable=False),
    Column("period", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
    Column("publisher", Text),
    CheckConstraint(f"theme IN {THEMES}", name="ck_indicators_theme"),
    CheckConstraint("direction IN (-1, 1)", name="ck_indicators_direction"),
    CheckConstraint("measure IN ('count', 'rate')", name="ck_indicators_measure"),
)

observations = Table(
    "observations",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("indicator_code", Text, ForeignKey("indicators.code", ondelete="CASCADE"), nullable=False),
    Column("boundary_set_id", Text, nullable=False),
    Column("pcode", Text, nullable=False),
    Column("period", Text, nullable=False),
    # NULL: the source marks the value as missing; a flag says why (never stored as 0)
    Column("value", Float),
    Column("source_id", Text, ForeignKey("sources.id"), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("flags", ARRAY(Text), nullable=False, server_default="{}"),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
    Column("sample_size", Float),
    ForeignKeyConstraint(
        ["boundary_set_id", "pcode"],
        ["admin_units.boundary_set_id", "admin_units.pcode"],
        ondelete="CASCADE",
        onupdate="CASCADE",
        name="fk_observations_unit",
    ),
    UniqueConstraint("indicator_code", "boundary_set_id", "pcode", "period", name="uq_observations"),
    CheckConstraint(
        "value <> 'NaN' AND value <> 'Infinity' AND value <> '-Infinity'", name="ck_observations_finite"
    ),
    Index("ix_observations_unit", "boundary_set_id", "pcode"),
)

# --- hazards (migrations 0002, 0004) --------------------------------------------------------------------

storms = Table(
    "storms",
    metadata,
    Column("storm_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("year", Integer, nullable=False),
    Column("source_id", Text, ForeignKey("sources.id"), nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True), nullable=False),
    Column("max_wind_kt", Float),
    Column("min_pressure_mb", Float),
    Column("track", _geometry("LINESTRING"), nullable=False),
    Index("ix_storms_track", "track", postgresql_using="gist"),
    Index("ix_storms_year", "year"),
)

storm_fixes = Table(
    "storm_fixes",
    metadata,
    Column("storm_id", Text, ForeignKey("storms.storm_id", ondelete="CASCADE"), primary_key=True),
    Column("time", DateTime(timezone=True), primary_key=True),
    Column("record", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False),
    Column("wind_kt", Float, nullable=False),
    Column("pressure_mb", Float),
    Column("r34_nmi", Float),
    Column("r64_nmi", Float),
    Column("rmw_nmi", Float),
    Column("geom", _geometry("POINT"), nullable=False),
    Index("ix_storm_fixes_geom", "geom", postgresql_using="gist"),
)

hazard_events = Table(
    "hazard_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("source_id", Text, ForeignKey("sources.id"), nullable=False),
    Column("serial", Text, nullable=False),
    Column("country", String(3), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("hydromet", Boolean, nullable=False),
    Column("date", Date),
    Column("year", Integer),
    Column("department_name", Text, nullable=False),
    Column("municipio_name", Text, nullable=False),
    Column("boundary_set_id", Text),
    Column("pcode", Text),
    Column("place", Text, nullable=False, server_default=""),
    Column("deaths", Float),
    Column("injured", Float),
    Column("missing", Float),
    Column("houses_destroyed", Float),
    Column("houses_affected", Float),
    Column("victims", Float),
    Column("affected", Float),
    Column("glide", Text, nullable=False, server_default=""),
    ForeignKeyConstraint(
        ["boundary_set_id", "pcode"],
        ["admin_units.boundary_set_id", "admin_units.pcode"],
        ondelete="SET NULL",
        onupdate="CASCADE",
        name="fk_hazard_events_unit",
    ),
    UniqueConstraint("source_id", "serial", name="uq_hazard_events_serial"),
    Index("ix_hazard_events_unit", "boundary_set_id", "pcode"),
    Index("ix_hazard_events_type_year", "country", "event_type", "year"),
)

# --- scoring results (migrations 0003, 0005, 0006) ------------------------------------------------------

score_runs = Table(
    "score_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("profile_id", Text, nullable=False),
    Column("profile_hash", String(16), nullable=False),
    Column("data_version", String(32), nullable=False),
    Column("sets", ARRAY(Text), nullable=False),
    Column("profile", JSONB, nullable=False),
    Column("sensitivity", JSONB),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("fit", JSONB),
    UniqueConstraint("profile_hash", "data_version", "sets", name="uq_score_runs"),
)

scores = Table(
    "scores",
    metadata,
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("boundary_set_id", Text, primary_key=True),
    Column("pcode", Text, primary_key=True),
    Column("country", String(3), nullable=False),
    Column("score", Float),
    Column("ranked", Boolean, nullable=False),
    Column("rank", Integer),
    Column("rank_region", Integer),
    Column("tier", SmallInteger),
    Column("pillar", Text),
    Column("pillar_secondary", Text),
    Column("pillar_scores", JSONB, nullable=False),
    Column("migration", Float),
    Column("coverage", Float, nullable=False),
    Column("top_indicators", JSONB, nullable=False),
    Column("vintage", ARRAY(Text), nullable=False),
    Column("rank_median", Float),
    Column("rank_lo", Integer),
    Column("rank_hi", Integer),
    Column("p_top", Float),
    Column("tier_stability", Float),
    Column("robust", Boolean),
    Column("hotspot", Text, nullable=False),
    Column("hotspot_confidence", SmallInteger),
    Column("gi_z", Float),
    Column("zone", Text),
    Column("pillar_ranks", JSONB, nullable=False, server_default="{}"),
    Column("driver_coverage", Float),
    Column("not_ranked_reason", Text),
    Index("ix_scores_rank", "run_id", "country", "rank"),
)

score_zones = Table(
    "score_zones",
    metadata,
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("zone", Text, primary_key=True),
    Column("country", String(3), nullable=False),
    Column("units", Integer, nullable=False),
    Column("members", ARRAY(Text), nullable=False),
    Column("mean_score", Float),
    Column("max_score", Float),
    Column("area_km2", Float, nullable=False),
    Column("pillar", Text),
    Column("geom", _geometry("MULTIPOLYGON")),
)

# --- the data epoch (migration 0007) --------------------------------------------------------------------

data_epoch = Table(
    "data_epoch",
    metadata,
    # a SMALLINT key of its own is a smallserial, as migration 0007 made it; the check keeps one row
    Column("id", SmallInteger, primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("reason", Text, nullable=False, server_default="created"),
    CheckConstraint("id = 1", name="ck_data_epoch_single_row"),
)

# --- the shared rate limit (migration 0008) -------------------------------------------------------------

rate_limits = Table(
    "rate_limits",
    metadata,
    # unlogged: a crash may lose the last minutes' counts, which only resets the limit early
    Column("client", Text, nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("hits", Integer, nullable=False),
    PrimaryKeyConstraint("client", "window_start", name="pk_rate_limits"),
    prefixes=["UNLOGGED"],
)

# the client-safe error of each failed scenario job (app/jobs.py); the queue's own tables are procrastinate's
# (migration 0010, all named procrastinate_*, left out of Alembic's comparison by migrations/env.py)
job_errors = Table(
    "job_errors",
    metadata,
    Column("job_id", BigInteger, nullable=False, autoincrement=False),  # procrastinate's job id
    Column("status", SmallInteger, nullable=False),
    Column("code", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("job_id", name="pk_job_errors"),
)

# --- baselines (migration 0011) ------------------------------------------------------------------------

# A named, frozen score run to compare later runs with (app/baselines.py). RESTRICT: no pruning removes a run
# a baseline points at.
baselines = Table(
    "baselines",
    metadata,
    Column("id", Integer, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("profile_id", Text, nullable=False),
    Column("profile_hash", String(16), nullable=False),
    Column("profile", JSONB, nullable=False),
    Column("data_version", String(32), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("run_id", Integer, nullable=False),
    Column("sets", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("id", name="pk_baselines"),
    UniqueConstraint("name", name="uq_baselines_name"),
    ForeignKeyConstraint(["run_id"], ["score_runs.id"], ondelete="RESTRICT", name="fk_baselines_run"),
    Index("ix_baselines_run", "run_id"),
)

# Per unit, the profile's indicator values it was scored on at baseline time: {code: {value, period,
# contribution}} (a reload may replace the observations themselves).
baseline_values = Table(
    "baseline_values",
    metadata,
    Column("baseline_id", Integer, nullable=False),
    Column("boundary_set_id", Text, nullable=False),
    Column("pcode", Text, nullable=False),
    Column("indicators", JSONB, nullable=False),
    PrimaryKeyConstraint("baseline_id", "boundary_set_id", "pcode", name="pk_baseline_values"),
    ForeignKeyConstraint(
        ["baseline_id"], ["baselines.id"], ondelete="CASCADE", name="fk_baseline_values_baseline"
    ),
)

# --- the read model: views (migration 0009) -------------------------------------------------------------
#
# Views live in metadata of their own: Alembic's autogenerate neither compares nor creates views, so they
# stay out of `metadata` (which `alembic check` compares); tests/test_migrations.py compares these column
# lists with the views the migrations create instead.

views = MetaData()

_PILLARS = ("I", "II", "III", "IV", "V")

# A score run's municipios as flat typed columns. Every output of priorities reads this view; its rule for
# unranked municipios (ranked = false, not_ranked_reason says why, score-derived columns NULL) is the one rule.
priority_items = Table(
    "priority_items",
    views,
    Column("run_id", Integer),
    Column("unit_id", BigInteger),
    Column("pcode", Text),
    Column("name", Text),
    Column("country", String(3)),
    Column("department_pcode", Text),
    Column("department_name", Text),
    Column("boundary_set", Text),
    Column("ranked", Boolean),
    Column("not_ranked_reason", Text),
    Column("score", Float),
    Column("rank", Integer),
    Column("rank_region", Integer),
    Column("rank_lo", Integer),
    Column("rank_hi", Integer),
    Column("rank_median", Float),
    Column("p_top", Float),
    Column("robust", Boolean),
    Column("tier_stability", Float),
    Column("tier", Integer),
    Column("pillar", Text),
    Column("pillar_secondary", Text),
    *[Column(f"pillar_{p}", Float) for p in _PILLARS],
    *[Column(f"pillar_rank_{p}", Integer) for p in _PILLARS],
    Column("pillar_scores", JSONB),
    Column("pillar_ranks", JSONB),
    Column("migration", Float),
    Column("hotspot", Text),
    Column("hotspot_confidence", Integer),
    Column("gi_z", Float),
    Column("zone", Text),
    Column("coverage", Float),
    Column("driver_coverage", Float),
    Column("top_indicators", JSONB),
    *[Column(f"top_indicator_{i}", Text) for i in (1, 2, 3)],
    Column("vintage", ARRAY(Text)),
    Column("geom", _geometry("MULTIPOLYGON")),
    Column("geom_simple", _geometry("MULTIPOLYGON")),
)

# One storm per row with its number of six-hourly fixes: read by /v1/hazards/storms and the OGC collection.
storm_tracks = Table(
    "storm_tracks",
    views,
    Column("storm_id", Text),
    Column("name", Text),
    Column("year", Integer),
    Column("start_time", DateTime(timezone=True)),
    Column("end_time", DateTime(timezone=True)),
    Column("max_wind_kt", Float),
    Column("min_pressure_mb", Float),
    Column("source_id", Text),
    Column("fixes", Integer),
    Column("track", _geometry("LINESTRING")),
)
