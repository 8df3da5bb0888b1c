"""JSON responses serialised with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class ORJSONResponse(JSONResponse):
    """application/json rendered by orjson (fast, handles numpy and datetimes)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class GeoJSONResponse(ORJSONResponse):
    """application/geo+json."""

    media_type = "application/geo+json"
