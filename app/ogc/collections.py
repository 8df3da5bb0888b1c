"""The feature collections: each is a whitelisted set of typed properties over a PostGIS query.

Every identifier a client can name (property, sort key, filter attribute) is looked up here; values are
bound parameters. A collection's query is a subquery with columns `fid`, `geom`, `geom_simple` and its
properties, so filters, sorting and paging work the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    Boolean,
    Connection,
    Float,
    Integer,
    Numeric,
    Subquery,
    Text,
    and_,
    column,
    func,
    select,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

from app import baselines, models
from app.cache import data_epoch, epoch_scope
from app.errors import NotFound
from app.scoring.profile import PILLARS

au = models.admin_units
bs = models.boundary_sets
sc = models.scores
pi = models.priority_items
stt = models.storm_tracks
zn = models.score_zones


@dataclass(frozen=True)
class Prop:
    """A property clients may see, filter and sort on."""

    name: str
    type: str  # JSON Schema: string, number, integer, boolean
    description: str = ""


@dataclass(frozen=True)
class Context:
    """What a collection query depends on besides the request: the boundary set, the score run."""

    set_id: str | None = None
    run_id: int | None = None
    baseline: str | None = None  # `priority-changes`: the baseline named by the request (default: the newest)


@dataclass
class Collection:
    """A feature collection: its metadata, properties and the query that yields its features."""

    id: str
    title: str
    description: str
    props: list[Prop]
    build: Callable[[Context], Subquery]
    needs_run: bool = False
    set_id: str | None = None
    keywords: list[str] = field(default_factory=list)
    # whether its features change only with the data epoch and the context (app.ogc.features keeps their
    # id-and-properties text): not for `priority-changes`, whose baselines come and go without a new epoch
    epoch_bound: bool = True
    _subqueries: dict[Context, Subquery] = field(default_factory=dict, repr=False, compare=False)

    def subquery(self, ctx: Context) -> Subquery:
        """`build(ctx)`, kept per context (a registry lives for one data epoch; a statement is immutable): an
        items request no longer builds the collection's query anew (about 1 ms of Python)."""
        sub = self._subqueries.get(ctx)
        if sub is None:
            if len(self._subqueries) >= 64:
                self._subqueries.clear()
            sub = self.build(ctx)
            sub.c  # noqa: B018 - its column collection is made lazily: made here, before threads share it
            self._subqueries[ctx] = sub
        return sub

    def prop(self, name: str) -> Prop | None:
        """The property of that name, if it is one."""
        return next((p for p in self.props if p.name == name), None)


def _round(col: ColumnElement[Any], digits: int) -> ColumnElement[Any]:
    return func.round(col.cast(Numeric), digits).cast(Float)


def _department() -> Any:
    return au.alias("d")


def _municipalities(ctx: Context) -> Subquery:
    d = _department()
    scope = au.c.boundary_set_id == ctx.set_id if ctx.set_id else bs.c.is_default.is_(True)
    return (
        select(
            au.c.pcode.label("fid"),
            au.c.pcode.label("pcode"),
            au.c.national_code.label("national_code"),
            au.c.name.label("name"),
            au.c.country.label("country"),
            au.c.parent_pcode.label("department_pcode"),
            d.c.name.label("department_name"),
            au.c.boundary_set_id.label("boundary_set"),
            _round(au.c.area_km2, 3).label("area_km2"),
            au.c.geom.label("geom"),
            au.c.geom_simple.label("geom_simple"),
        )
        .select_from(
            au.join(bs, bs.c.id == au.c.boundary_set_id).outerjoin(
                d, and_(d.c.boundary_set_id == au.c.boundary_set_id, d.c.pcode == au.c.parent_pcode)
            )
        )
        .where(au.c.level == 2, scope)
        .subquery("c")
    )


MUNICIPALITY_PROPS = [
    Prop("pcode", "string", "P-code"),
    Prop("national_code", "string", "INE or DIGESTYC code"),
    Prop("name", "string"),
    Prop("country", "string", "ISO3"),
    Prop("department_pcode", "string"),
    Prop("department_name", "string"),
    Prop("boundary_set", "string"),
    Prop("area_km2", "number"),
]


def _priorities(ctx: Context) -> Subquery:
    """The run's rows of the `priority_items` view (the read model every output of priorities shares)."""
    names = [p.name for p in PRIORITY_PROPS]
    return (
        select(pi.c.pcode.label("fid"), *[pi.c[n] for n in names], pi.c.geom, pi.c.geom_simple)
        .where(pi.c.run_id == ctx.run_id)
        .subquery("c")
    )


PRIORITY_PROPS = [
    Prop("pcode", "string"),
    Prop("name", "string"),
    Prop("country", "string"),
    Prop("department_pcode", "string"),
    Prop("department_name", "string"),
    Prop("boundary_set", "string"),
    Prop("score", "number", "priority 0-100 (null when not ranked: see ranked and not_ranked_reason)"),
    Prop("rank", "integer", "rank in its country, 1 = first"),
    Prop("rank_region", "integer"),
    Prop("rank_lo", "integer", "5th percentile of the Monte Carlo ranks"),
    Prop("rank_hi", "integer", "95th percentile of the Monte Carlo ranks"),
    Prop("p_top", "number", "probability of ranking in the top 10"),
    Prop("robust", "boolean"),
    Prop("tier", "integer", "1 = highest priority"),
    Prop("pillar", "string", "lead pillar I-V"),
    Prop("pillar_secondary", "string"),
    *[Prop(f"pillar_{p}", "number", f"pillar {p} sub-score 0-100 (null: no data)") for p in PILLARS],
    *[
        Prop(f"pillar_rank_{p}", "integer", f"rank of pillar {p} in its country, 1 = most severe")
        for p in PILLARS
    ],
    Prop("migration", "number", "out-migration sub-score 0-100"),
    Prop("hotspot", "string", "Gi* label"),
    Prop("hotspot_confidence", "integer"),
    Prop("zone", "string", "programme zone id"),
    Prop("coverage", "number", "share of the weights with data"),
    Prop(
        "ranked", "boolean", "false: too little data for a priority; score, ranks, tier and pillars are null"
    ),
    Prop("not_ranked_reason", "string", "why a municipio is not ranked (null when ranked)"),
    Prop("top_indicator_1", "string"),
    Prop("top_indicator_2", "string"),
    Prop("top_indicator_3", "string"),
]


def _tracks(ctx: Context) -> Subquery:
    return select(
        stt.c.storm_id.label("fid"),
        stt.c.storm_id.label("storm_id"),
        stt.c.name.label("name"),
        stt.c.year.label("year"),
        func.to_char(stt.c.start_time, 'YYYY-MM-DD"T"HH24:MI"Z"').label("start_time"),
        func.to_char(stt.c.end_time, 'YYYY-MM-DD"T"HH24:MI"Z"').label("end_time"),
        stt.c.max_wind_kt.label("max_wind_kt"),
        stt.c.min_pressure_mb.label("min_pressure_mb"),
        stt.c.fixes.label("fixes"),
        stt.c.track.label("geom"),
        stt.c.track.label("geom_simple"),
    ).subquery("c")


TRACK_PROPS = [
    Prop("storm_id", "string"),
    Prop("name", "string"),
    Prop("year", "integer"),
    Prop("start_time", "string"),
    Prop("end_time", "string"),
    Prop("max_wind_kt", "number"),
    Prop("min_pressure_mb", "number"),
    Prop("fixes", "integer", "six-hourly best-track fixes"),
]


def _zones(ctx: Context) -> Subquery:
    return (
        select(
            zn.c.zone.label("fid"),
            zn.c.zone.label("zone"),
            zn.c.country.label("country"),
            zn.c.units.label("units"),
            func.array_to_string(zn.c.members, ",").label("members"),
            _round(zn.c.mean_score, 2).label("mean_score"),
            _round(zn.c.max_score, 2).label("max_score"),
            _round(zn.c.area_km2, 1).label("area_km2"),
            zn.c.pillar.label("pillar"),
            zn.c.geom.label("geom"),
            zn.c.geom.label("geom_simple"),
        )
        .where(zn.c.run_id == ctx.run_id)
        .subquery("c")
    )


ZONE_PROPS = [
    Prop("zone", "string"),
    Prop("country", "string"),
    Prop("units", "integer"),
    Prop("members", "string", "P-codes, comma-separated"),
    Prop("mean_score", "number"),
    Prop("max_score", "number"),
    Prop("area_km2", "number"),
    Prop("pillar", "string"),
]


def _priority_changes(ctx: Context) -> Subquery:
    """The default profile's run against the newest baseline of the default profile (or `ctx.baseline`, a
    baseline's name, when the request names one): app.baselines' one SQL over `priority_items`."""
    name = ctx.baseline
    then = (
        "(SELECT run_id FROM baselines WHERE name = :baseline)"
        if name
        else baselines.NEWEST_DEFAULT_BASELINE_RUN
    )
    kinds = {"string": Text, "number": Float, "integer": Integer, "boolean": Boolean}
    sql = text(f"SELECT c.pcode AS fid, c.* FROM ({baselines.changes_sql(now=':now_run', then=then)}) c")
    sql = sql.bindparams(now_run=ctx.run_id, **({"baseline": name} if name else {}))
    return sql.columns(
        column("fid", Text),
        *[column(p.name, kinds[p.type]) for p in CHANGE_PROPS],
        column("geom", Geometry("MULTIPOLYGON", srid=4326)),
        column("geom_simple", Geometry("MULTIPOLYGON", srid=4326)),
    ).subquery("c")


CHANGE_PROPS = [
    Prop("pcode", "string"),
    Prop("name", "string"),
    Prop("country", "string"),
    Prop("department_pcode", "string"),
    Prop("department_name", "string"),
    Prop("boundary_set", "string"),
    Prop("ranked_then", "boolean", "ranked at the baseline"),
    Prop("ranked_now", "boolean"),
    Prop("score_then", "number", "score 0-100 at the baseline"),
    Prop("score_now", "number"),
    Prop("score_change", "number", "score now - then (positive: more priority)"),
    Prop("rank_then", "integer"),
    Prop("rank_now", "integer"),
    Prop("rank_change", "integer", "rank then - now (positive: moved up the list)"),
    Prop("tier_then", "integer"),
    Prop("tier_now", "integer"),
    Prop("tier_change", "integer", "tier then - now (positive: a higher-priority tier)"),
    Prop("pillar_then", "string"),
    Prop("pillar_now", "string"),
    Prop("pillar_changed", "boolean", "the lead pillar changed"),
]


WORLD = [-180.0, -90.0, 180.0, 90.0]  # the extent of a collection without features


def _epoch_cache(conn: Connection) -> dict[Any, Any]:
    """What is cached for this database at its current data epoch. Every load that writes bumps the epoch
    (app.ingest.provenance.bump_epoch), so the catalogue and the extents are rebuilt once after a load, not
    on every request; the epoch is known in memory (app.cache.EpochWatch) or read by primary key."""
    return epoch_scope(conn.engine, "ogc.collections", data_epoch(conn))


def registry(conn: Connection) -> dict[str, Collection]:
    """Every collection, including one per stored boundary set (built once per data epoch)."""
    cache = _epoch_cache(conn)
    if "registry" not in cache:
        cache["registry"] = _registry(conn)
    reg: dict[str, Collection] = cache["registry"]
    return reg


def _registry(conn: Connection) -> dict[str, Collection]:
    out = {
        "municipalities": Collection(
            "municipalities",
            "Municipios (current boundary sets)",
            "The municipios of Guatemala (340), El Salvador (the 44 of 2024) and Honduras (298). Other boundary "
            "sets: the municipalities-<set> collections, or ?set=.",
            MUNICIPALITY_PROPS,
            _municipalities,
        ),
        "priorities": Collection(
            "priorities",
            "Priority municipios (root-causes-2021)",
            "Every municipio scored with the default profile: score, rank and its 5-95 % interval, tier, lead "
            "pillar, pillar sub-scores, hotspot, zone, coverage.",
            PRIORITY_PROPS,
            _priorities,
            needs_run=True,
        ),
        "hurricane-tracks": Collection(
            "hurricane-tracks",
            "Atlantic hurricane tracks since 1975",
            "NOAA HURDAT2 best tracks (via the dplyr storms table): one line per storm.",
            TRACK_PROPS,
            _tracks,
        ),
        "zones": Collection(
            "zones",
            "Programme zones (root-causes-2021)",
            "Contiguous groups of tier-1 or hot-spot municipios, dissolved.",
            ZONE_PROPS,
            _zones,
            needs_run=True,
        ),
        "priority-changes": Collection(
            "priority-changes",
            "Priority changes since the baseline (root-causes-2021)",
            "Per municipio, score, rank, tier and lead pillar of the default profile now and at its newest "
            "baseline (POST /v1/baselines), with the changes (positive: more priority). Empty until a baseline "
            "of the default profile exists. Which indicators moved: /v1/priorities/changes.",
            CHANGE_PROPS,
            _priority_changes,
            needs_run=True,
            epoch_bound=False,
        ),
    }
    for set_id, title in conn.execute(select(bs.c.id, bs.c.title).order_by(bs.c.id)).all():
        cid = f"municipalities-{set_id}"
        out[cid] = Collection(
            cid,
            title,
            f"The level-2 units of boundary set {set_id}.",
            MUNICIPALITY_PROPS,
            _municipalities,
            set_id=set_id,
        )
    return out


def get(conn: Connection, collection_id: str) -> Collection:
    """A collection by id, or 404 naming the ones there are."""
    reg = registry(conn)
    if collection_id not in reg:
        raise NotFound(f"No collection '{collection_id}'; collections: {', '.join(reg)}.")
    return reg[collection_id]


def columns(sub: Subquery, c: Collection) -> dict[str, ColumnElement[Any]]:
    """Property name → column of the collection's subquery (the whitelist)."""
    return {p.name: sub.c[p.name] for p in c.props}


def extent(conn: Connection, c: Collection, ctx: Context) -> list[float]:
    """The bounding box of the collection's features in CRS84 (computed once per data epoch and run)."""
    cache = _epoch_cache(conn)
    key = ("extent", c.id, ctx.set_id, ctx.run_id, ctx.baseline)
    if key in cache:
        cached: list[float] = cache[key]
        return cached
    box = _extent(conn, c, ctx)
    if box != WORLD:  # an empty collection (priority-changes before a baseline) is not kept: it may fill
        cache[key] = box
    return box


def _extent(conn: Connection, c: Collection, ctx: Context) -> list[float]:
    sub = c.build(ctx)
    box = conn.execute(
        select(
            func.ST_XMin(func.ST_Extent(sub.c.geom)),
            func.ST_YMin(func.ST_Extent(sub.c.geom)),
            func.ST_XMax(func.ST_Extent(sub.c.geom)),
            func.ST_YMax(func.ST_Extent(sub.c.geom)),
        )
    ).one()
    return [round(v, 5) for v in box] if box[0] is not None else list(WORLD)
