"""Items of a collection: paging, bbox (any served CRS), CRS of the output, property filters, CQL2, sortby,
properties. Everything a client names is checked against the collection's whitelist; values are bound."""

from __future__ import annotations

import difflib
import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
import psycopg
from sqlalchemy import Connection, Select, Text, and_, func, literal_column, select, true
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.util import LRUCache

from app.cache import database_key
from app.errors import InvalidParameter, NotFound
from app.ogc import crs as crs_mod
from app.ogc.collections import Collection, Context, columns
from app.ogc.cql2 import Queryable, to_sqlalchemy

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
# the query parameters of an items request, as the OpenAPI document lists them
ITEMS_PARAMETERS = (
    "limit",
    "offset",
    "bbox",
    "bbox-crs",
    "crs",
    "filter",
    "filter-lang",
    "filter-crs",
    "sortby",
    "properties",
    "geometry",
    "f",
)
# parameters that are never property filters: the above, `set` (the boundary set of `municipalities` and
# `priorities`) and OGC's `datetime` (accepted as Part 1 requires; no collection has a time dimension)
RESERVED = {*ITEMS_PARAMETERS, "set", "datetime"}
# the query parameters of a single feature
ITEM_PARAMETERS = ("crs", "properties", "geometry", "f", "set")


def check_known(given: Iterable[str], allowed: Iterable[str], properties: Iterable[str] = ()) -> None:
    """InvalidParameter naming the query parameters that are neither `allowed` nor property filters, with
    what is allowed (OGC API Features Part 1, /req/core/query-param-unknown): a typo such as `countyr=SLV`
    must not silently return everything."""
    known = set(allowed)
    props = sorted(properties)
    unknown = sorted(set(given) - known - set(props))
    if not unknown:
        return
    names = ", ".join(f"'{name[:40]}'" for name in unknown[:5])
    close = difflib.get_close_matches(unknown[0], [*known, *props], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    takes = f"Allowed: {', '.join(sorted(known))}"
    if props:
        takes += f"; and property filters: {', '.join(props)}"
    plural = "s" if len(unknown) > 1 else ""
    raise InvalidParameter(f"Unknown query parameter{plural} {names}{hint}. {takes}.")


@dataclass
class ItemsQuery:
    """A parsed, validated items request."""

    limit: int
    offset: int
    crs: crs_mod.Crs
    full_geometry: bool
    where: list[ColumnElement[bool]]
    order: list[Any]
    properties: list[str]


def _int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer, got '{raw[:20]}'.") from None
    if not lo <= value <= hi:
        raise InvalidParameter(f"{name} must be between {lo} and {hi}, got {value}.")
    return value


def _bbox(raw: str, bbox_crs: crs_mod.Crs, geom: ColumnElement[Any]) -> ColumnElement[bool]:
    try:
        nums = [float(v) for v in raw.split(",")]
    except ValueError:
        raise InvalidParameter("bbox must be 4 (or 6) comma-separated numbers.") from None
    if len(nums) == 6:
        nums = [nums[0], nums[1], nums[3], nums[4]]
    if len(nums) != 4 or not all(math.isfinite(v) for v in nums):
        raise InvalidParameter("bbox must be 4 (or 6) comma-separated finite numbers.")
    x0, y0, x1, y1 = nums
    if bbox_crs.lat_first:
        x0, y0, x1, y1 = y0, x0, y1, x1
    if x0 > x1 or y0 > y1:
        raise InvalidParameter("bbox lower corner must not exceed its upper corner.")
    if bbox_crs.srid == 4326 and not (
        -180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90
    ):
        raise InvalidParameter("bbox in degrees: longitudes within ±180, latitudes within ±90.")
    env = func.ST_MakeEnvelope(x0, y0, x1, y1, bbox_crs.srid)
    if bbox_crs.srid != 4326:
        env = func.ST_Transform(env, 4326)
    return func.ST_Intersects(geom, env)


def _coerce(prop_type: str, name: str, raw: str) -> Any:
    try:
        if prop_type == "integer":
            return int(raw)
        if prop_type == "number":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise InvalidParameter(f"{name} must be a {prop_type}, got '{raw[:20]}'.") from None
    if prop_type == "boolean":
        if raw.lower() not in ("true", "false"):
            raise InvalidParameter(f"{name} must be true or false, got '{raw[:20]}'.")
        return raw.lower() == "true"
    return raw


def parse(
    params: Mapping[str, str], c: Collection, cols: dict[str, ColumnElement[Any]], geom: ColumnElement[Any]
) -> ItemsQuery:
    """Validate every parameter of an items request against the collection."""
    limit = _int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(params, "offset", 0, 0, 10_000_000)
    out_crs = crs_mod.parse(params.get("crs"), "crs")
    where: list[ColumnElement[bool]] = []
    if params.get("bbox"):
        where.append(_bbox(params["bbox"], crs_mod.parse(params.get("bbox-crs"), "bbox-crs"), geom))
    elif params.get("bbox-crs"):
        crs_mod.parse(params["bbox-crs"], "bbox-crs")
    for name, raw in params.items():
        if name in RESERVED:
            continue
        prop = c.prop(name)
        if prop is not None:
            where.append(cols[name] == _coerce(prop.type, name, raw))
    if params.get("filter"):
        lang = params.get("filter-lang", "cql2-text")
        if lang != "cql2-text":
            raise InvalidParameter(f"filter-lang '{lang}' is not supported; use cql2-text.")
        filter_crs = crs_mod.parse(params.get("filter-crs"), "filter-crs")
        queryables = {p.name: Queryable(p.name, cols[p.name], p.type) for p in c.props}
        where.append(
            to_sqlalchemy(
                params["filter"], queryables, geom, filter_crs=filter_crs.srid, swap_axes=filter_crs.lat_first
            )
        )
    order: list[Any] = []
    for key in (k.strip() for k in params.get("sortby", "").split(",") if k.strip()):
        desc = key.startswith("-")
        name = key.lstrip("+-").strip()
        if name not in cols:
            raise InvalidParameter(f"sortby: '{name[:40]}' is not a property; sortable: {', '.join(cols)}.")
        order.append(cols[name].desc().nulls_last() if desc else cols[name].asc().nulls_last())
    props = [p.name for p in c.props]
    if params.get("properties") is not None:
        wanted = [p.strip() for p in params["properties"].split(",") if p.strip()]
        unknown = [p for p in wanted if p not in cols]
        if unknown:
            raise InvalidParameter(f"properties: unknown {unknown[:5]}; available: {', '.join(cols)}.")
        props = wanted
    geometry = params.get("geometry", "simplified")
    if geometry not in ("simplified", "full"):
        raise InvalidParameter("geometry must be 'simplified' or 'full'.")
    return ItemsQuery(limit, offset, out_crs, geometry == "full", where, order, props)


def _geojson(g: ColumnElement[Any], crs: crs_mod.Crs) -> ColumnElement[Any]:
    if crs.srid != 4326:
        g = func.ST_Transform(g, crs.srid)
    if crs.lat_first:
        g = func.ST_FlipCoordinates(g)
    return func.ST_AsGeoJSON(g, crs.decimals, 0)  # options 0: no "crs" member (Content-Crs says it)


def _select(c: Collection, sub: Any, q: ItemsQuery) -> Select[Any]:
    cols = columns(sub, c)
    geom = sub.c.geom if q.full_geometry else sub.c.geom_simple
    return select(sub.c.fid, *(cols[p] for p in q.properties), _geojson(geom, q.crs).label("__geometry"))


def _feature(row: Any, props: list[str]) -> dict[str, Any]:
    m = row._mapping
    return {
        "type": "Feature",
        "id": m["fid"],
        "geometry": orjson.loads(m["__geometry"]) if m["__geometry"] else None,
        "properties": {p: m[p] for p in props},
    }


def _json_text(column: str, prop_type: str = "string") -> str:
    """SQL for a column's value as JSON text (null for NULL). A `number` that happens to be whole keeps a
    decimal point (1.0, not PostgreSQL's 1), so that clients inferring field types from the first features
    (GDAL's OAPIF driver, QGIS) make it a real field, not an integer one."""
    as_json = f"to_json({column})::text"
    if prop_type == "number":
        as_json = (
            f"CASE WHEN {column} = trunc({column}) AND abs({column}) < 1e15 "
            f"THEN trunc({column})::bigint::text || '.0' ELSE {as_json} END"
        )
    return f"coalesce({as_json}, 'null')"


@functools.lru_cache(maxsize=256)
def _feature_parts(
    alias: str, props: tuple[tuple[str, str], ...], geometry: str, srid: int, lat_first: bool, decimals: int
) -> tuple[str, str]:
    """The SQL of one feature as GeoJSON text in two parts, built once per shape of request (collection
    properties, CRS, geometry column) instead of as an expression tree on every request: its head (the text
    up to and including `"geometry":`) and its geometry; the feature is head, geometry, then `}`. Every name
    in it comes from the collection's whitelist (letters, digits, underscores), quoted; the numbers from the
    served CRS list."""
    g = f'"{alias}"."{geometry}"'
    if srid != 4326:
        g = f"ST_Transform({g}, {int(srid)})"
    if lat_first:
        g = f"ST_FlipCoordinates({g})"
    parts = ["""'{"type":"Feature","id":'""", _json_text(f'"{alias}".fid'), """',"properties":{'"""]
    for i, (name, prop_type) in enumerate(props):
        parts += [f"""'{"," if i else ""}"{name}":'""", _json_text(f'"{alias}"."{name}"', prop_type)]
    parts.append("""'},"geometry":'""")
    return " || ".join(parts), f"coalesce(ST_AsGeoJSON({g}, {int(decimals)}, 0), 'null')"  # 0: no "crs"


def _feature_sql(
    alias: str, props: tuple[tuple[str, str], ...], geometry: str, srid: int, lat_first: bool, decimals: int
) -> str:
    """The SQL of one feature as GeoJSON text. The geometry (kilobytes) goes last: each `||` copies the text
    built so far, so putting it first made every property copy it again (measured: the properties cost twice
    the geometry's own encoding)."""
    head, geom = _feature_parts(alias, props, geometry, srid, lat_first, decimals)
    return f"({head}) || {geom} || '}}'"


def _props(c: Collection, q: ItemsQuery) -> tuple[tuple[str, str], ...]:
    """The requested properties with their types, checked against the whitelist again."""
    props = []
    for name in q.properties:
        prop = c.prop(name)
        if prop is None or not name.replace("_", "").isalnum():
            raise InvalidParameter(f"properties: unknown '{name[:40]}'.")
        props.append((name, prop.type))
    return tuple(props)


def _feature_json(c: Collection, sub: Any, q: ItemsQuery) -> Select[Any]:
    """Each feature as GeoJSON text assembled by PostgreSQL: ST_AsGeoJSON's geometry is spliced in as it comes,
    never parsed and re-serialised in Python, and the properties keep the collection's order."""
    sql = _feature_sql(
        sub.name,
        _props(c, q),
        "geom" if q.full_geometry else "geom_simple",
        q.crs.srid,
        q.crs.lat_first,
        q.crs.decimals,
    )
    return select(literal_column(sql, Text).label("feature")).select_from(sub)


CHUNK_BYTES = 2 << 20  # a page up to this many bytes of features is sent whole, a larger one in chunks of it
# rows per chunk PostgreSQL sends (libpq's chunked-rows mode); 250 rows of full geometry are about 1.5 MB
FETCH_ROWS = 250


class _Bytes(psycopg.adapt.Loader):
    """Text as the bytes PostgreSQL sent (the features are UTF-8 JSON already: no decode and re-encode)."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


@dataclass
class ItemsPage:
    """A page of features being read: the parsed query, the first chunk of comma-joined features (read when
    the page is made, so database errors surface before a response starts), the chunks after it, and
    numberMatched once every chunk has been read."""

    q: ItemsQuery
    first: tuple[int, bytes]
    rest: Generator[tuple[int, bytes], None, None]
    complete: bool  # the first chunk is the whole page
    _count: Callable[[], int]

    def number_matched(self, returned: int) -> int:
        """numberMatched: a page that ends short of its limit tells it (offset + returned), so the count is
        run only for a full page or a page past the end."""
        if returned < self.q.limit and (returned or not self.q.offset):
            return self.q.offset + returned
        return self._count()


_COMPILED: Any = LRUCache(256)  # SQLAlchemy's compiled statements by cache key (as an engine keeps them)


def _compiled(conn: Connection, stmt: Select[Any]) -> tuple[str, dict[str, Any]]:
    """SQL and parameters of a statement as SQLAlchemy would send them to psycopg. The SQL is SQLAlchemy's
    compiled statement for the statement's cache key (the same shape of request with other values), as
    `conn.execute` would reuse it; a statement with expanding parameters (IN lists) is compiled each time."""
    cached, extracted, *_ = stmt._compile_w_cache(
        dialect=conn.dialect, compiled_cache=_COMPILED, column_keys=[], for_executemany=False
    )
    comp = cast(SQLCompiler, cached)
    if comp.post_compile_params or comp.literal_execute_params:
        comp = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        extracted = None
    params = comp.construct_params(extracted_parameters=extracted) or {}
    procs = cast(dict[str, Callable[[Any], Any]], comp._bind_processors)
    return comp.string, {k: procs[k](v) if k in procs else v for k, v in params.items()}


def _chunks(
    conn: Connection,
    sql: str,
    args: dict[str, Any],
    feature: Callable[[tuple[Any, ...]], bytes] | None = None,
) -> Generator[tuple[int, bytes], None, None]:
    """The features of `sql`'s rows in chunks of about CHUNK_BYTES: (features, comma-joined bytes; every chunk
    after the first starts with its comma, so that chunks are sent as they are, not copied again). A row's
    feature is its one column, or `feature(row)`. Database errors come as SQLAlchemy's (as from
    `conn.execute`), so the API's error handlers treat them alike."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cur.adapters.register_loader("text", _Bytes)
    # chunks of rows need psycopg 3.2 and libpq 17 (psycopg-binary's wheels bundle a recent libpq); without
    # them PostgreSQL sends the rows one by one (single-row mode), as streamed but with more overhead
    caps = getattr(psycopg, "capabilities", None)
    if caps is not None and caps.has_stream_chunked():
        stream = cur.stream(sql, args, size=FETCH_ROWS)
    else:
        stream = cur.stream(sql, args)
    rows = cast(Generator[tuple[Any, ...], None, None], stream)
    buf: list[bytes] = []
    lead = 0  # 1 after the first chunk: an empty first item puts the comma before the chunk's features
    held = 0
    try:
        for row in rows:
            text_ = row[0] if feature is None else feature(row)
            buf.append(text_)
            held += len(text_)
            if held >= CHUNK_BYTES:
                yield len(buf) - lead, b",".join(buf)
                buf, lead, held = [b""], 1, 0
    except psycopg.Error as exc:
        gone = conn.dialect.is_disconnect(cast(Any, exc), conn.connection.dbapi_connection, cur)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, args, exc, psycopg.Error, connection_invalidated=gone, dialect=conn.dialect
        ) from exc
    finally:
        rows.close()  # a stream left early: psycopg cancels the query and reads what was sent
        cur.close()
    if len(buf) > lead:
        yield len(buf) - lead, b",".join(buf)


class _Stale(Exception):
    """The page's rows are of another data epoch than the kept feature heads."""


@dataclass(frozen=True)
class _Heads:
    """The head of every feature of a collection (its text up to `"geometry":`, as `_feature_parts` makes
    it) by feature id, read from the database at data epoch `epoch`; `size` estimates its bytes."""

    epoch: int
    by_fid: dict[bytes, bytes]
    size: int


_EPOCH_SQL = "(SELECT epoch FROM data_epoch WHERE id = 1)"
HEADS_BYTES = 64 << 20  # the kept heads of all collections, contexts and properties together (per process)
_heads_kept: OrderedDict[tuple[Any, ...], _Heads] = OrderedDict()
_heads_lock = threading.Lock()


def _heads(
    conn: Connection, c: Collection, sub: Any, ctx: Context, props: tuple[tuple[str, str], ...]
) -> _Heads:
    """The feature heads of the collection for this context and choice of properties, kept across requests
    (the least recently used dropped beyond HEADS_BYTES). They do not depend on the filter, order, page,
    CRS or geometry column, so one read of the whole collection serves every page of it."""
    key = (database_key(conn.engine), c.id, ctx, props)
    with _heads_lock:
        kept = _heads_kept.get(key)
        if kept is not None:
            _heads_kept.move_to_end(key)
            return kept
    head, _ = _feature_parts(sub.name, props, "geom", 4326, False, 0)
    cols: tuple[ColumnElement[Any], ...] = (
        literal_column(_EPOCH_SQL),
        literal_column(f'"{sub.name}".fid::text'),
        literal_column(head, Text),
    )
    # through SQLAlchemy (its errors, as every other query's): read once per epoch, the text is encoded here
    rows = conn.execute(select(*cols).select_from(sub)).all()
    by_fid = {str(fid).encode(): str(text_).encode() for _, fid, text_ in rows}
    size = sum(len(f) + len(t) + 120 for f, t in by_fid.items())  # 120: two bytes objects and a dict slot
    made = _Heads(rows[0][0] if rows else -1, by_fid, size)
    with _heads_lock:
        _heads_kept[key] = made
        total = sum(h.size for h in _heads_kept.values())
        while total > HEADS_BYTES and len(_heads_kept) > 1:
            total -= _heads_kept.popitem(last=False)[1].size
    return made


def _forget_heads(conn: Connection, c: Collection, ctx: Context, props: tuple[tuple[str, str], ...]) -> None:
    with _heads_lock:
        _heads_kept.pop((database_key(conn.engine), c.id, ctx, props), None)


def items_json(conn: Connection, c: Collection, ctx: Context, params: Mapping[str, str]) -> ItemsPage:
    """A page of features as GeoJSON text made by PostgreSQL, streamed in one query (libpq's chunked-rows
    mode: no server-side cursor round trips; a page of 10,000 features is never held whole in memory, only
    about CHUNK_BYTES of it). The connection is busy until `rest` has been read to its end or closed.

    The page's query returns each feature's id and geometry, and the data epoch it read; the rest of each
    feature's text, its head, comes from `_heads`, made by PostgreSQL with the same SQL as a whole feature
    and kept per collection, context and choice of properties, so the properties are not encoded again for
    every page (measured: a third of PostgreSQL's time for a page of 208 municipios). When the page was read
    at another data epoch than the heads (a load has just committed), the heads are dropped and the page is
    read whole instead: a page never mixes two states of the data. The bytes are the same either way. A
    collection whose features change without a new data epoch (`priority-changes`: baselines are made and
    deleted at any time) is always read whole."""
    sub = c.subquery(ctx)
    q = parse(params, c, columns(sub, c), sub.c.geom)
    cond = and_(true(), *q.where)
    props = _props(c, q)

    def read(
        stmt: Select[Any], assemble: Callable[[tuple[Any, ...]], bytes] | None
    ) -> Generator[tuple[int, bytes], None, None]:
        stmt = stmt.where(cond).order_by(*q.order, sub.c.fid).limit(q.limit).offset(q.offset)
        sql, args = _compiled(conn, stmt)
        return _chunks(conn, sql, args, assemble)

    if c.epoch_bound:
        rest = _with_heads(conn, c, sub, ctx, q, props, read)
    else:  # its features change without a new data epoch: read whole
        rest = read(_feature_json(c, sub, q), None)
    try:
        first = next(rest, (0, b""))
    except _Stale:
        _forget_heads(conn, c, ctx, props)
        rest = read(_feature_json(c, sub, q), None)
        first = next(rest, (0, b""))
    # _chunks yields a chunk short of CHUNK_BYTES only at the end
    complete = first[0] == 0 or first[0] == q.limit or len(first[1]) < CHUNK_BYTES
    if complete and next(rest, None) is not None:  # nothing more: this reads the end of the stream
        raise RuntimeError("a complete page had more rows")

    def count() -> int:
        return int(conn.execute(select(func.count()).select_from(sub).where(cond)).scalar_one())

    return ItemsPage(q, first, rest, complete, count)


def _with_heads(
    conn: Connection,
    c: Collection,
    sub: Any,
    ctx: Context,
    q: ItemsQuery,
    props: tuple[tuple[str, str], ...],
    read: Callable[[Select[Any], Callable[[tuple[Any, ...]], bytes] | None], Any],
) -> Generator[tuple[int, bytes], None, None]:
    """The page's chunks from its ids and geometries and the kept heads; `_Stale` from its first chunk when
    the page was read at another data epoch than the heads."""
    heads = _heads(conn, c, sub, ctx, props)
    _, geom_sql = _feature_parts(
        sub.name,
        props,
        "geom" if q.full_geometry else "geom_simple",
        q.crs.srid,
        q.crs.lat_first,
        q.crs.decimals,
    )

    def feature(row: tuple[Any, ...]) -> bytes:
        epoch, fid, geometry = row
        head = heads.by_fid.get(fid)
        if epoch != heads.epoch or head is None:
            raise _Stale
        return b"".join((head, geometry, b"}"))

    parts: tuple[ColumnElement[Any], ...] = (
        literal_column(_EPOCH_SQL),
        literal_column(f'"{sub.name}".fid::text'),
        literal_column(geom_sql, Text),
    )
    chunks: Generator[tuple[int, bytes], None, None] = read(select(*parts).select_from(sub), feature)
    return chunks


def item_json(
    conn: Connection, c: Collection, ctx: Context, fid: str, params: Mapping[str, str]
) -> tuple[bytes, ItemsQuery]:
    """One feature as GeoJSON text, or 404."""
    sub = c.build(ctx)
    q = parse({k: v for k, v in params.items() if k in ITEM_PARAMETERS}, c, columns(sub, c), sub.c.geom)
    text_ = conn.execute(_feature_json(c, sub, q).where(sub.c.fid == fid)).scalar()
    if text_ is None:
        raise NotFound(f"No feature '{fid[:60]}' in collection '{c.id}'.")
    return str(text_).encode(), q


def items(
    conn: Connection, c: Collection, ctx: Context, params: Mapping[str, str]
) -> tuple[int, list[dict[str, Any]], ItemsQuery]:
    """numberMatched, one page of features, and the parsed query."""
    sub = c.build(ctx)
    q = parse(params, c, columns(sub, c), sub.c.geom)
    cond = and_(true(), *q.where)
    total = conn.execute(select(func.count()).select_from(sub).where(cond)).scalar_one()
    stmt = _select(c, sub, q).where(cond).order_by(*q.order, sub.c.fid).limit(q.limit).offset(q.offset)
    return int(total), [_feature(r, q.properties) for r in conn.execute(stmt)], q


def item(
    conn: Connection, c: Collection, ctx: Context, fid: str, params: Mapping[str, str]
) -> tuple[dict[str, Any], ItemsQuery]:
    """One feature by id, or 404."""
    sub = c.build(ctx)
    q = parse(
        {k: v for k, v in params.items() if k in ITEM_PARAMETERS},
        c,
        columns(sub, c),
        sub.c.geom,
    )
    row = conn.execute(_select(c, sub, q).where(sub.c.fid == fid)).first()
    if row is None:
        raise NotFound(f"No feature '{fid[:60]}' in collection '{c.id}'.")
    return _feature(row, q.properties), q
