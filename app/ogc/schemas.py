"""Pydantic models of the OGC API Features responses, and their schemas for the OpenAPI 3.0 document at /api.

Documentation, not runtime validation: the routes build plain dicts (or let PostgreSQL build the GeoJSON) for
speed, and these models say what those documents are. The schemathesis run (tests/test_fuzz.py) checks every
response against them, so a response that drifts from its documented shape (a renamed, extra or wrong-typed
property) fails a test. The models forbid extra members for that reason.

Features are typed per collection: the `properties` model of a collection is generated from its `Prop`
list (app/ogc/collections.py), every property optional (`properties=` selects a subset) and nullable (a
municipio that is not ranked has no score), no other property allowed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.ogc.collections import (
    CHANGE_PROPS,
    MUNICIPALITY_PROPS,
    PRIORITY_PROPS,
    TRACK_PROPS,
    ZONE_PROPS,
    Prop,
)

REF = "#/components/schemas/{model}"
_PY_TYPES: dict[str, type] = {"string": str, "number": float, "integer": int, "boolean": bool}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Link(_Strict):
    """A link of a landing page, collection, feature collection or feature."""

    href: str
    rel: str
    type: str | None = None
    title: str | None = None


class LandingPage(_Strict):
    """The landing page: the service's title and its links (API definition, conformance, collections)."""

    title: str
    description: str
    links: list[Link]


class Conformance(_Strict):
    """The conformance classes the service implements."""

    conformsTo: list[str]  # noqa: N815 (the OGC member name)


BBox = Annotated[list[float], Field(min_length=4, max_length=6)]


class SpatialExtent(_Strict):
    """The bounding box of a collection's features and its CRS."""

    bbox: Annotated[list[BBox], Field(min_length=1)]
    crs: str


class Extent(_Strict):
    """A collection's extent (spatial only: no collection has a time dimension)."""

    spatial: SpatialExtent


class Collection(_Strict):
    """One feature collection's metadata."""

    id: str
    title: str
    description: str
    itemType: Literal["feature"]  # noqa: N815
    extent: Extent
    crs: list[str]
    storageCrs: str  # noqa: N815
    links: list[Link]


class Collections(_Strict):
    """Every feature collection."""

    links: list[Link]
    collections: list[Collection]
    crs: list[str]


class Queryables(_Strict):
    """The properties a filter may name, as a JSON Schema document (OGC API Features Part 3)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(alias="$schema")
    id_: str = Field(alias="$id")
    type: Literal["object"]
    title: str
    properties: dict[str, dict[str, Any]]
    additionalProperties: bool  # noqa: N815


class OgcException(_Strict):
    """Every error answer: a code and a message that says what to fix."""

    code: str
    description: str
    errors: list[str] | None = None


# GeoJSON geometries (RFC 7946) as the service writes them: 2-D positions (3-D allowed by the RFC).
Position = Annotated[list[float], Field(min_length=2, max_length=3)]
Ring = Annotated[list[Position], Field(min_length=4)]


class Point(_Strict):
    """A GeoJSON Point."""

    type: Literal["Point"]
    coordinates: Position


class MultiPoint(_Strict):
    """A GeoJSON MultiPoint."""

    type: Literal["MultiPoint"]
    coordinates: list[Position]


class LineString(_Strict):
    """A GeoJSON LineString."""

    type: Literal["LineString"]
    coordinates: Annotated[list[Position], Field(min_length=2)]


class MultiLineString(_Strict):
    """A GeoJSON MultiLineString."""

    type: Literal["MultiLineString"]
    coordinates: list[Annotated[list[Position], Field(min_length=2)]]


class Polygon(_Strict):
    """A GeoJSON Polygon."""

    type: Literal["Polygon"]
    coordinates: list[Ring]


class MultiPolygon(_Strict):
    """A GeoJSON MultiPolygon."""

    type: Literal["MultiPolygon"]
    coordinates: list[list[Ring]]


GEOMETRIES: tuple[type[BaseModel], ...] = (
    Point,
    MultiPoint,
    LineString,
    MultiLineString,
    Polygon,
    MultiPolygon,
)
# the geometry type of each static collection (the column types of app/models.py); others: any geometry
GEOMETRY_OF = {
    "municipalities": MultiPolygon,
    "priorities": MultiPolygon,
    "zones": MultiPolygon,
    "hurricane-tracks": LineString,
    "priority-changes": MultiPolygon,
}

AnyGeometry = Point | MultiPoint | LineString | MultiLineString | Polygon | MultiPolygon
Scalar = str | int | float | bool | None


def _model_name(collection_id: str) -> str:
    """A component name from a collection id: `hurricane-tracks` → `HurricaneTracks`."""
    return "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", collection_id) if part)


def properties_model(collection_id: str, props: Iterable[Prop]) -> type[BaseModel]:
    """The `properties` of a collection's features: every property optional and nullable, no other allowed."""
    fields: dict[str, Any] = {
        p.name: (
            _PY_TYPES[p.type] | None,
            Field(default=None, description=p.description or None),
        )
        for p in props
    }
    return create_model(
        f"{_model_name(collection_id)}Properties",
        __config__=ConfigDict(extra="forbid", strict=True),
        __doc__=f"The properties of a feature of {collection_id} (each optional: `properties=` selects).",
        **fields,
    )


def feature_models(
    collection_id: str, props: Iterable[Prop] | None
) -> tuple[type[BaseModel], type[BaseModel]]:
    """The Feature and FeatureCollection models of a collection; `props` None: the generic feature of any
    collection (scalar properties, any geometry)."""
    name = _model_name(collection_id)
    what = collection_id or "any collection"
    if props is None:
        properties: Any = dict[str, Scalar]
        geometry: Any = AnyGeometry
    else:
        properties = properties_model(collection_id, props)
        geometry = GEOMETRY_OF.get(collection_id, AnyGeometry)
    feature_fields: dict[str, Any] = {
        "type": (Literal["Feature"], ...),
        "id": (str | int, ...),
        "geometry": (geometry | None, ...),
        "properties": (properties, ...),
        "links": (list[Link] | None, None),
    }
    feature = create_model(
        f"{name}Feature",
        __base__=_Strict,
        __doc__=f"A feature of {what}: its id, geometry (null when it has none) and properties.",
        **feature_fields,
    )
    page_fields: dict[str, Any] = {
        "type": (Literal["FeatureCollection"], ...),
        "numberMatched": (Annotated[int, Field(ge=0)], ...),
        "numberReturned": (Annotated[int, Field(ge=0)], ...),
        "timeStamp": (str, ...),
        "links": (list[Link], ...),
        "features": (list[feature], ...),
    }
    collection = create_model(
        f"{name}FeatureCollection",
        __base__=_Strict,
        __doc__=f"A page of features of {what}, with the number matched and returned and paging links.",
        **page_fields,
    )
    return feature, collection


def to_oas30(schema: Any) -> Any:
    """A JSON Schema from pydantic (draft 2020-12) rewritten as an OpenAPI 3.0 Schema Object: `X | None`
    (anyOf with a null type) becomes X with `nullable: true` (a `$ref` wrapped in allOf, since 3.0 ignores a
    $ref's siblings); `const` becomes a one-value enum; `$defs` are left to the caller."""
    if isinstance(schema, list):
        return [to_oas30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_oas30(v) for k, v in schema.items() if k != "$defs"}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if not isinstance(options, list) or {"type": "null"} not in options:
            continue
        rest = [o for o in options if o != {"type": "null"}]
        del out[key]
        if all("$ref" in o for o in rest):  # models (objects): 3.0 ignores a $ref's siblings
            out.update({"type": "object", "nullable": True, key if len(rest) > 1 else "allOf": rest})
        elif len(rest) == 1:
            out = {**rest[0], **out, "nullable": True}
        else:  # scalars: each typed option nullable (3.0 has no list of types)
            out[key] = [{**o, "nullable": True} for o in rest]
        if out.get("default", 0) is None:
            out.pop("default")  # a null default says nothing a missing member does not
    return out


def components(models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """`components/schemas` of the given models (name → model) and every model they refer to, in OpenAPI 3.0
    form; nested models are named by pydantic (their class name)."""
    out: dict[str, Any] = {}
    for name, model in models.items():
        schema = model.model_json_schema(ref_template=REF, by_alias=True, mode="serialization")
        for def_name, definition in schema.get("$defs", {}).items():
            out[def_name] = to_oas30(definition)
        out[name] = to_oas30(schema)
    return out


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": REF.format(model=name)}


# The static collections get their own, typed items paths in /api; the municipalities-<set> collections use
# the generic {collectionId} paths and the generic feature.
STATIC_COLLECTIONS: dict[str, list[Prop]] = {
    "municipalities": MUNICIPALITY_PROPS,
    "priorities": PRIORITY_PROPS,
    "hurricane-tracks": TRACK_PROPS,
    "zones": ZONE_PROPS,
    "priority-changes": CHANGE_PROPS,
}


def feature_schema_names(collection_id: str) -> tuple[str, str]:
    """The component names of a static collection's Feature and FeatureCollection ('' for the generic)."""
    name = _model_name(collection_id)
    return f"{name}Feature", f"{name}FeatureCollection"


@functools.cache
def openapi_components() -> dict[str, Any]:
    """`components/schemas` of /api: the documents above, a Feature and FeatureCollection per static
    collection and the generic pair (built once: pydantic's schema generation takes milliseconds)."""
    models: dict[str, type[BaseModel]] = {
        "LandingPage": LandingPage,
        "Conformance": Conformance,
        "Collections": Collections,
        "Collection": Collection,
        "Queryables": Queryables,
        "exception": OgcException,
    }
    for cid, props in [*STATIC_COLLECTIONS.items(), ("", None)]:
        feature, page = feature_models(cid, props)
        models[feature.__name__] = feature
        models[page.__name__] = page
    return components(models)
