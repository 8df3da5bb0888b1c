"""JSON responses serialised with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ORJSONResponse(JSONResponse):
    """application/json rendered by orjson (fast, handles numpy and datetimes)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


GEOJSON = "application/geo+json"


class GeoJSONResponse(ORJSONResponse):
    """application/geo+json."""

    media_type = GEOJSON


class ErrorBody(BaseModel):
    """Every error answer: a code and a message that says what to fix."""

    code: str
    description: str
    errors: list[str] | None = None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses, all with the error body."""
    words = {
        400: "Invalid parameter",
        401: "API key missing",
        403: "API key not valid",
        404: "Not found",
        413: "Request body too large",
        422: "Invalid input",
        429: "Too many requests",
        503: "Database unavailable",
    }
    return {s: {"model": ErrorBody, "description": words.get(s, "Error")} for s in statuses}


COMMON_ERRORS = errors(400, 404, 422, 429, 503)


_COMPONENT = "#/components/schemas/{model}"  # where FastAPI puts the response models' schemas


def geojson_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI schema of a route's GeoJSON answer, from the model of its JSON answer: for a page (a model
    with `items`), a FeatureCollection whose features' properties are an item (the item model's component);
    otherwise one Feature whose properties are the model without its `geometry` (which is the Feature's)."""
    items = model.model_fields.get("items")
    if items is not None:
        (item,) = items.annotation.__args__  # type: ignore[union-attr]
        properties: dict[str, Any] = {"$ref": _COMPONENT.format(model=item.__name__)}
    else:
        properties = model.model_json_schema(ref_template=_COMPONENT)
        properties.pop("$defs", None)  # the nested models are components of their own (the JSON answer's)
        properties["properties"].pop("geometry", None)
        properties["required"] = [r for r in properties.get("required", []) if r != "geometry"]
    feature = {
        "type": "object",
        "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {"type": ["string", "integer"]},
            "geometry": {"type": ["object", "null"], "description": "GeoJSON geometry, CRS84"},
            "properties": properties,
        },
    }
    if items is None:
        return feature
    return {
        "type": "object",
        "required": ["type", "features"],
        "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "numberMatched": {"type": "integer"},
            "numberReturned": {"type": "integer"},
            "features": {"type": "array", "items": feature},
        },
    }


def media(
    *types: str, model: type[BaseModel] | None = None, status: int = 200, description: str | None = None
) -> dict[int | str, dict[str, Any]]:
    """An OpenAPI response (200 unless `status`) listing the media types a `format` parameter can select.
    With `model`, the JSON body's schema is that pydantic model's (app/api/schemas.py): FastAPI writes it into
    the OpenAPI document, and nothing is validated at run time (the routes return ORJSONResponse)."""
    binary = {"type": "string", "format": "binary"}
    content: dict[str, Any] = {
        t: ({"schema": {"type": "object"}} if "json" in t else {"schema": binary}) for t in types
    }
    if model is not None and GEOJSON in content:
        content[GEOJSON] = {"schema": geojson_schema(model)}
    response: dict[str, Any] = {"content": content}
    if model is not None:
        content.pop("application/json", None)  # FastAPI puts the model's schema there
        response["model"] = model
    if description is not None:
        response["description"] = description
    return {status: response}
