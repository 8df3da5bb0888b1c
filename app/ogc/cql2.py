"""CQL2-text filters → SQLAlchemy expressions over whitelisted queryables (OGC API Features Part 3).

Identifiers are looked up in the queryables and values become bound parameters, so nothing the client
writes reaches SQL as text.
"""

from __future__ import annotations

import functools
import logging
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import shapely
from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedInput
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_text import parser as cql2_text
from pyproj import Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import shape
from sqlalchemy import ColumnElement, and_, func, literal, not_, or_

from app.errors import InvalidParameter

log = logging.getLogger(__name__)

GEOMETRY_NAMES = ("geometry", "geom")
# The test cluster (and any --no-locale one) has C collation, whose lower() leaves Á and Ñ alone.
CASEI_COLLATION = "und-x-icu"
MAX_LENGTH = 20_000
MAX_NESTING = 32

_KINDS = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}
_COMPARE: dict[Any, Callable[[Any, Any], ColumnElement[bool]]] = {
    op: getattr(operator, op.name.lower()) for op in ast.ComparisonOp
}
# pygeofilter 0.4's grammar binds AND and OR equally tightly (so `a OR b AND c` meant `(a OR b) AND c`),
# only allows a single predicate after NOT ( … ), does not read '' inside a string literal and
# stops at a line break.
_GRAMMAR_FIXES = (
    (
        r"\?condition:.*?(?=\?predicate:)",
        '?condition: term | condition "OR"i term -> or_\n'
        '?term: condition_1 | term "AND"i condition_1 -> and_\n'
        '?condition_1: predicate | "NOT"i predicate -> not_ | "NOT"i "(" condition ")" -> not_'
        ' | "(" condition ")"\n\n',
    ),
    (r"SINGLE_QUOTED: .*?\n", "SINGLE_QUOTED: \"'\" /(?:[^']|'')*/ \"'\"\n"),
    (r"%import common\.WS_INLINE\s*%ignore WS_INLINE", "%import common.WS\n%ignore WS"),
)
_STRINGS = re.compile(r"'[^']*(?:''[^']*)*'|\"[^\"]*\"")
_UNSENDABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL text cannot hold NUL; UTF-8 no lone surrogates


@dataclass(frozen=True)
class Queryable:
    """One whitelisted property: its name in filters, the column it maps to and its JSON Schema type."""

    name: str
    column: ColumnElement[Any]
    type: str


class _Operand(NamedTuple):
    expr: ColumnElement[Any]
    kind: str
    label: str


@v_args(inline=True)
class _Transformer(cql2_text.CQLTransformer):  # type: ignore[misc]
    def SINGLE_QUOTED(self, token: Token) -> str:  # noqa: N802 (lark calls it by the terminal's name)
        return token[1:-1].replace("''", "'")

    # pygeofilter's versions of these two print to stdout.
    def wkt__geometry_with_srid(self, srid: Token, geometry: dict[str, Any]) -> dict[str, Any]:
        return {**geometry, "crs": int(srid)}

    def wkt__multipoint_2(self, *coordinates: tuple[float, ...]) -> dict[str, Any]:
        return {"type": "MultiPoint", "coordinates": coordinates}


@functools.cache
def _parser() -> Lark:
    """pygeofilter's CQL2-text grammar with the fixes above, built once."""
    path = Path(cql2_text.__file__).with_name("grammar.lark")
    grammar = path.read_text()
    for pattern, replacement in _GRAMMAR_FIXES:
        match = re.search(pattern, grammar, flags=re.S)
        if match is None:
            raise RuntimeError(f"pygeofilter's CQL2 grammar changed: {pattern!r} not found")
        grammar = grammar[: match.start()] + replacement + grammar[match.end() :]
    return Lark(
        grammar,
        parser="lalr",
        transformer=_Transformer(),
        source_path=str(path),
        import_paths=[str(path.parent.parent)],
        maybe_placeholders=False,
    )


def to_sqlalchemy(
    cql: str,
    queryables: Mapping[str, Queryable],
    geometry: ColumnElement[Any] | None,
    *,
    filter_crs: int = 4326,
    swap_axes: bool = False,
) -> ColumnElement[bool]:
    """Translate a CQL2-text filter into a boolean expression; InvalidParameter says what to fix."""
    return _Translator(queryables, geometry, filter_crs, swap_axes).condition(_parse(cql))


def _parse(cql: str) -> Any:
    """Size checks, then pygeofilter's AST."""
    if len(cql) > MAX_LENGTH:
        raise InvalidParameter(f"filter: too long ({len(cql)} characters, at most {MAX_LENGTH})")
    if _UNSENDABLE.search(cql):
        raise InvalidParameter("filter: contains a NUL or an unpaired surrogate character")
    depth = peak = 0
    for char in _STRINGS.sub("", cql):
        depth += {"(": 1, ")": -1}.get(char, 0)
        peak = max(peak, depth)
    if peak > MAX_NESTING:
        raise InvalidParameter(f"filter: parentheses nested {peak} deep, at most {MAX_NESTING}")
    try:
        return _parser().parse(cql)
    except UnexpectedInput as exc:
        pos = exc.pos_in_stream if exc.pos_in_stream is not None else -1
        near = cql[pos : pos + 20] if pos >= 0 else ""
        where = f"line {exc.line}, column {exc.column} near {near!r}" if near else "the end"
        raise InvalidParameter(f"filter: CQL2-text syntax error at {where}") from exc
    # pygeofilter's transformer runs inside the parser, so its own failures (e.g. TypeError for
    # `-name`) surface as arbitrary exceptions.
    except Exception as exc:
        log.info("unparseable filter %r: %r", cql[:200], exc)
        raise InvalidParameter("filter: not valid CQL2-text (arithmetic is not supported)") from exc


@dataclass(frozen=True)
class _Translator:
    queryables: Mapping[str, Queryable]
    geometry: ColumnElement[Any] | None
    srid: int
    swap_axes: bool

    def condition(self, node: Any) -> ColumnElement[bool]:
        """One boolean node of pygeofilter's AST as SQLAlchemy."""
        if isinstance(node, ast.And | ast.Or):
            combine = and_ if isinstance(node, ast.And) else or_
            return combine(*(self.condition(part) for part in _operands(node)))
        if isinstance(node, ast.Not):
            return not_(self.condition(node.sub_node))
        if isinstance(node, ast.Comparison):
            lhs, rhs = self.operands(node.lhs, node.rhs)
            return _COMPARE[node.op](lhs.expr, rhs.expr)
        if isinstance(node, ast.Like):
            lhs, pattern = self.operands(node.lhs, node.pattern, kind="string", use="LIKE")
            # CQL2-text fixes the wildcards to % and _ with \ as escape, as SQL does; pygeofilter's
            # `singlechar` of '.' does not apply.
            like = lhs.expr.ilike if node.nocase else lhs.expr.like
            return _negate(like(pattern.expr, escape="\\"), node.not_)
        if isinstance(node, ast.In):
            lhs, *items = self.operands(node.lhs, *node.sub_nodes)
            return _negate(lhs.expr.in_([item.expr for item in items]), node.not_)
        if isinstance(node, ast.Between):
            lhs, low, high = self.operands(node.lhs, node.low, node.high)
            return _negate(lhs.expr.between(low.expr, high.expr), node.not_)
        if isinstance(node, ast.IsNull):
            expr = self.operand(node.lhs).expr
            return expr.is_not(None) if node.not_ else expr.is_(None)
        if isinstance(node, ast.GeometryIntersects):
            prop, value = (
                (node.lhs, node.rhs) if isinstance(node.lhs, ast.Attribute) else (node.rhs, node.lhs)
            )
            column = self.operand(prop)
            if column.kind != "geometry":
                raise InvalidParameter(f"filter: S_INTERSECTS needs the property {GEOMETRY_NAMES[0]!r}")
            return func.ST_Intersects(column.expr, self.geometry_literal(value))
        raise InvalidParameter(
            f"filter: {_describe(node)} is not supported; use comparisons, LIKE, IN, BETWEEN, IS NULL, "
            "AND/OR/NOT, CASEI and S_INTERSECTS"
        )

    def operands(self, *nodes: Any, kind: str | None = None, use: str = "") -> list[_Operand]:
        """Operands of one type (`kind`, which `use` needs, if given), else InvalidParameter naming them."""
        resolved = [self.operand(node) for node in nodes]
        for item in resolved:
            if item.kind == "geometry":
                raise InvalidParameter("filter: the geometry can only be used in S_INTERSECTS and IS NULL")
            if kind is not None and item.kind != kind:
                raise InvalidParameter(f"filter: {item.label} is a {item.kind} but {use} needs a {kind}")
            if item.kind != resolved[0].kind:
                raise InvalidParameter(
                    f"filter: {item.label} is a {item.kind} but {resolved[0].label} is a "
                    f"{resolved[0].kind}; compare values of the same type"
                )
        return resolved

    def operand(self, node: Any) -> _Operand:
        """A property, literal or CASEI(…) as an expression with its type and a label for messages."""
        if isinstance(node, ast.Attribute):
            if node.name in self.queryables:
                queryable = self.queryables[node.name]
                return _Operand(queryable.column, _KINDS[queryable.type], node.name)
            if node.name in GEOMETRY_NAMES and self.geometry is not None:
                return _Operand(self.geometry, "geometry", node.name)
            names = [*sorted(self.queryables), *(GEOMETRY_NAMES[:1] if self.geometry is not None else ())]
            raise InvalidParameter(
                f"filter: unknown property {node.name[:64]!r}; queryables are: {', '.join(names)}"
            )
        if isinstance(node, bool | int | float | str):
            kind = {bool: "boolean", int: "number", float: "number", str: "string"}[type(node)]
            return _Operand(literal(node), kind, repr(node)[:64])
        # pygeofilter reads CASEI as lower(); a LOWER() in the filter is indistinguishable from it.
        if isinstance(node, ast.Function) and node.name == "lower" and len(node.arguments) == 1:
            (arg,) = self.operands(node.arguments[0], kind="string", use="CASEI")
            return _Operand(func.lower(arg.expr.collate(CASEI_COLLATION)), "string", f"CASEI({arg.label})")
        raise InvalidParameter(f"filter: {_describe(node)} is not supported here")

    def geometry_literal(self, node: Any) -> ColumnElement[Any]:
        """A WKT or BBOX literal in the filter CRS as a bound PostGIS geometry in EPSG:4326."""
        if isinstance(node, ast.Function) and node.name == "bbox" and len(node.arguments) in (4, 6):
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in node.arguments):
                raise InvalidParameter("filter: BBOX takes numbers")
            half = len(node.arguments) // 2  # with six numbers the third and sixth are heights
            geom = shapely.box(*node.arguments[:2], *node.arguments[half : half + 2])
        elif isinstance(node, values.Geometry | values.Envelope):
            if "crs" in node.__geo_interface__:
                raise InvalidParameter("filter: give the CRS with filter-crs, not SRID=…;")
            try:
                geom = shapely.force_2d(shape(node.__geo_interface__))
            except (ValueError, TypeError, shapely.errors.ShapelyError) as exc:
                raise InvalidParameter(f"filter: invalid geometry literal ({exc})") from exc
        else:
            raise InvalidParameter(f"filter: S_INTERSECTS needs a geometry literal, not {_describe(node)}")
        if self.swap_axes:
            geom = shapely.transform(geom, lambda xy: xy[:, ::-1])
        if self.srid != 4326:
            # Transformed here rather than by ST_Transform, whose errors (a point outside the
            # projection's domain) would be database errors rather than a 400.
            try:
                to_wgs84 = Transformer.from_crs(self.srid, 4326, always_xy=True)
            except CRSError as exc:
                raise InvalidParameter(f"filter: unknown filter CRS EPSG:{self.srid}") from exc
            geom = shapely.transform(geom, lambda xy: np.column_stack(to_wgs84.transform(*xy.T)))
            if not np.isfinite(shapely.get_coordinates(geom)).all():
                raise InvalidParameter(f"filter: the geometry literal lies outside EPSG:{self.srid}")
        if not geom.is_valid:
            raise InvalidParameter(f"filter: invalid geometry literal ({shapely.is_valid_reason(geom)})")
        return func.ST_GeomFromText(geom.wkt, 4326)


def _operands(node: ast.Combination) -> list[Any]:
    """The operands of a chain of one operator, flattened (the parser nests `a AND b AND c` leftwards)."""
    found, stack = [], [node]
    while stack:
        item = stack.pop()
        if type(item) is type(node):
            stack += [item.rhs, item.lhs]
        else:
            found.append(item)
    return found


def _negate(expr: ColumnElement[bool], negate: bool) -> ColumnElement[bool]:
    return not_(expr) if negate else expr


def _describe(node: Any) -> str:
    """A short client-facing name for an AST node or value."""
    if isinstance(node, ast.Function):
        return f"the function {node.name.upper()}()"
    if isinstance(node, ast.Arithmetic):
        return "arithmetic"
    if isinstance(node, ast.SpatialComparisonPredicate):
        return f"S_{node.op.name}"
    if isinstance(node, ast.Node):
        return type(node).__name__
    return f"a {type(node).__name__} value"
