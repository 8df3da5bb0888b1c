"""POST /v1/validation: how far a profile's ranking agrees with a reference table; nothing is stored."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app import validation
from app.api import schemas
from app.api.responses import COMMON_ERRORS, ORJSONResponse, errors, media
from app.errors import DataError, InvalidParameter

router = APIRouter(prefix="/v1", tags=["validation"], responses=COMMON_ERRORS)

_SPEC = validation.Spec.model_json_schema()
_ROW = {
    "type": "object",
    "description": "pcode; or municipio with department; or department only; plus value (and country)",
    "properties": {
        "pcode": {"type": "string", "example": "GT0101"},
        "municipio": {"type": "string"},
        "department": {"type": "string"},
        "country": {"type": "string", "example": "GTM"},
        "value": {"type": "number"},
    },
}
_JSON_BODY = {
    **_SPEC,
    "properties": {**_SPEC["properties"], "rows": {"type": "array", "items": _ROW}},
    "required": [*_SPEC.get("required", []), "rows"],
}
_FORM_BODY = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The reference: .csv or .json"},
        **_SPEC["properties"],
    },
    "required": ["file"],
}
_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _JSON_BODY},
            "multipart/form-data": {"schema": _FORM_BODY},
        },
    }
}


async def _json_fields(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise DataError("The body must be a JSON object with the metadata and 'rows'.")
    return body


async def _form_fields(request: Request) -> tuple[dict[str, Any], tuple[str, bytes]]:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidParameter("Send the reference table as the form field 'file' (.csv or .json).")
    data = await upload.read()
    if not data:
        raise InvalidParameter("The uploaded file is empty.")
    fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
    return fields, (upload.filename or "reference.csv", data)


@router.post(
    "/validation",
    openapi_extra=_OPENAPI,
    responses={**media("application/json", model=schemas.ValidationReport), **errors(413, 415)},
    summary="Compare a profile's ranking with a reference table (Spearman, top-k, tier-1 hits); nothing stored",
)
async def validate(request: Request) -> ORJSONResponse:
    """A reference table (JSON rows, or a CSV / JSON file in a multipart form) keyed by P-code, municipio
    with department, or department, with what it measures, its source and period, compared with the profile's
    stored run per country: rows matched (unmatched with suggestions), Spearman with a seeded bootstrap 95 %
    interval for municipios and departments, top-k overlap and tier-1 hit rate against chance
    (hypergeometric), the largest rank disagreements. `per_capita: true` compares counts per 1,000 residents.
    A bad row is a 422 naming it."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    file: tuple[str, bytes] | None = None
    if kind == "application/json":
        fields = await _json_fields(request)
    elif kind == "multipart/form-data":
        fields, file = await _form_fields(request)
    else:
        return ORJSONResponse(
            {
                "code": "UnsupportedMediaType",
                "description": "Send application/json (metadata and 'rows') or multipart/form-data "
                "(a .csv or .json 'file' and the metadata as fields).",
            },
            status_code=415,
        )
    engine = request.app.state.engine
    result = await run_in_threadpool(validation.validate, engine, fields, file)
    return ORJSONResponse(result)
