"""CQL2-text filters → SQLAlchemy expressions over whitelisted queryables (OGC API Features Part 3).

Identifiers are looked up in the queryables and values become bound parameters, so nothing the client
writes reaches SQL as text.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import shapely
from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_text import parser as cql2_text
from pyproj import Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import shape
from sqlalchemy import ColumnElement, and_, func, literal, not_, or_

from app.errors import InvalidParameter

GEOMETRY_NAMES = ("geometry", "geom")
# The test cluster (and any --no-locale one) has C collation, whose lower() leaves Á and Ñ alone.
CASEI_COLLATION = "und-x-icu"
MAX_LENGTH = 20_000
MAX_NESTING = 32

_KINDS = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}
_COMPARE: dict[Any, Callable[[Any, Any], ColumnElement[bool]]] = {
    op: getattr(operator, op.name.lower()) for op in ast.ComparisonOp
}
# The pygeofilter releases whose grammar the fixes below are known to apply to (pyproject.toml pins the same).
PYGEOFILTER_TESTED = ">=0.4.0,<0.5"
GRAMMAR_PATH = Path(cql2_text.__file__).with_name("grammar.lark")
# pygeofilter 0.4's grammar binds AND and OR equally tightly (so `a OR b AND c` meant `(a OR b) AND c`),
# only allows a single predicate after NOT ( … ), does not read '' inside a string literal and
# stops at a line break. Each fix: what it changes, the text it replaces, the replacement.
_GRAMMAR_FIXES = (
    (
        "AND binding tighter than OR, and NOT (…) around any condition",
        r"\?condition:.*?(?=\?predicate:)",
        '?condition: term | condition "OR"i term -> or_\n'
        '?term: condition_1 | term "AND"i condition_1 -> and_\n'
        '?condition_1: predicate | "NOT"i predicate -> not_ | "NOT"i "(" condition ")" -> not_'
        ' | "(" condition ")"\n\n',
    ),
    ("'' inside string literals", r"SINGLE_QUOTED: .*?\n", "SINGLE_QUOTED: \"'\" /(?:[^']|'')*/ \"'\"\n"),
    (
        "line breaks as white space",
        r"%import common\.WS_INLINE\s*%ignore WS_INLINE",
        "%import common.WS\n%ignore WS",
    ),
)
# Filters the fixed grammar must read as stated (the fixes' purpose), checked whenever the parser is built.
_SELF_CHECKS: tuple[tuple[str, Callable[[Any], bool]], ...] = (
    ("aa = 1 OR bb = 2 AND cc = 3", lambda n: isinstance(n, ast.Or) and isinstance(n.rhs, ast.And)),
    ("NOT (aa = 1 OR bb = 2)", lambda n: isinstance(n, ast.Not) and isinstance(n.sub_node, ast.Or)),
    ("aa = 'O''Brien'", lambda n: isinstance(n, ast.Equal) and n.rhs == "O'Brien"),
    ("aa = 1\nAND bb = 2", lambda n: isinstance(n, ast.And)),
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


class GrammarFixError(RuntimeError):
    """pygeofilter's CQL2-text grammar no longer takes Raíces's fixes: refuse to start rather than misread
    filters."""


@v_args(inline=True)
class _Transformer(cql2_text.CQLTransformer):  # type: ignore[misc]
    def SINGLE_QUOTED(self, token: Token) -> str:  # noqa: N802 (lark calls it by the terminal's name)
        return token[1:-1].replace("''", "'")

    # pygeofilter's versions of these two print to stdout.
    def wkt__geometry_with_srid(self, srid: Token, geometry: dict[str, Any]) -> dict[str, Any]:
        return {**geometry, "crs": int(srid)}

    def wkt__multipoint_2(self, *coordinates: tuple[float, ...]) -> dict[str, Any]:
        return {"type": "MultiPoint", "coordinates": coordinates}

    # pygeofilter's returns `-value`: a TypeError for a property, and -1 for `-TRUE`. Anything but a
    # number becomes 0 - value, arithmetic, which the translation refuses with a message.
    def neg(self, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
        return ast.Sub(0, value)


_TRANSFORMER = _Transformer()


def pygeofilter_grammar() -> str:
    """The CQL2-text grammar of the installed pygeofilter, as shipped."""
    return GRAMMAR_PATH.read_text()


def fixed_grammar(grammar: str) -> str:
    """The grammar with the fixes above; GrammarFixError when one no longer finds what it replaces."""
    for what, pattern, replacement in _GRAMMAR_FIXES:
        match = re.search(pattern, grammar, flags=re.S)
        if match is None:
            raise GrammarFixError(
                f"pygeofilter {version('pygeofilter')}: its CQL2-text grammar ({GRAMMAR_PATH}) no longer has "
                f"the rule that the fix for {what} replaces ({pattern!r}), so filters would be read wrongly. "
                f"The fixes are known to apply to pygeofilter {PYGEOFILTER_TESTED} (pinned in pyproject.toml); "
                "install one of those or update _GRAMMAR_FIXES in app/ogc/cql2.py."
            )
        grammar = grammar[: match.start()] + replacement + grammar[match.end() :]
    return grammar


def build_parser() -> Lark:
    """pygeofilter's CQL2-text grammar with the fixes, as an LALR parser, checked on a few filters whose
    reading the fixes decide; GrammarFixError if a fix does not apply or does not take effect."""
    parser = Lark(
        fixed_grammar(pygeofilter_grammar()),
        parser="lalr",
        source_path=str(GRAMMAR_PATH),
        import_paths=[str(GRAMMAR_PATH.parent.parent)],
        maybe_placeholders=False,
        cache=True,  # Lark keeps the built tables in a temp file keyed by grammar and options: 0.6 -> 0.03 s
    )
    for probe, ok in _SELF_CHECKS:
        try:
            node = _TRANSFORMER.transform(parser.parse(probe))
        except Exception as exc:  # any failure here is the grammar's, reported as such
            node = exc
        if not ok(node):
            raise GrammarFixError(
                f"pygeofilter {version('pygeofilter')}: with the grammar fixes, {probe!r} reads as {node!r}. "
                f"The fixes are known to work with pygeofilter {PYGEOFILTER_TESTED} (pinned in pyproject.toml)."
            )
    return parser


@functools.cache
def parser() -> Lark:
    """The one parser of the process, built on first use; `create_app` calls it, so a grammar fix that no
    longer applies stops the service at start-up instead of failing every filter."""
    return build_parser()


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
    lalr = parser()  # outside the try: a parser that cannot be built is not the client's fault
    try:
        tree = lalr.parse(cql)
    except UnexpectedInput as exc:
        raise InvalidParameter(f"filter: CQL2-text syntax error at {_where(cql, exc)}") from exc
    try:
        return _TRANSFORMER.transform(tree)
    except VisitError as exc:
        # pygeofilter turns literals into values as it goes: a date or timestamp that is no date
        # (TIMESTAMP('2020-01-01T25:00:00Z')) is a ValueError, the client's to fix. Anything else is a bug.
        if isinstance(exc.orig_exc, ValueError):
            raise InvalidParameter(
                f"filter: invalid {str(exc.rule).lower()} literal: {exc.orig_exc}"
            ) from exc
        raise exc.orig_exc from exc


def _where(cql: str, exc: UnexpectedInput) -> str:
    """Where the parser stopped and what it did not expect there, for a syntax error message."""
    pos = exc.pos_in_stream if exc.pos_in_stream is not None else -1
    near = cql[pos : pos + 20] if pos >= 0 else ""
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":  # placed on the last token
        after = f", after {near.strip()!r}" if near.strip() else ""
        return f"line {exc.line}, column {exc.column}: the filter ends too early{after}"
    if isinstance(exc, UnexpectedToken):
        what = repr(str(exc.token)[:40])
    elif isinstance(exc, UnexpectedCharacters):
        what = f"character {exc.char!r}"
    else:
        what = "input"
    return f"line {exc.line}, column {exc.column}: unexpected {what} near {near!r}"


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
