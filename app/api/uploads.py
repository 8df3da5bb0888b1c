"""POST /v1/uploads: a user's CSV, XLSX, GeoJSON, GeoPackage or GeoTIFF becomes an indicator layer through the
same loaders, validated before anything is stored; DELETE /v1/uploads/{indicator} removes one. Need an API key."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi import Path as PathParam

from app.api import schemas
from app.api.deps import ConnDep
from app.api.responses import COMMON_ERRORS, ORJSONResponse, errors, media
from app.api.security import ApiKey
from app.errors import DataError, InvalidParameter
from app.ingest.layers import store_layer
from app.ingest.userdata import (
    TableSpec,
    check_code_free,
    delete_user_layer,
    prepare_user_layer,
    user_indicator,
)

router = APIRouter(prefix="/v1", tags=["uploads"], responses=COMMON_ERRORS)

SUFFIXES = {
    ".csv": "table",
    ".xlsx": "table",
    ".geojson": "table",
    ".json": "table",
    ".gpkg": "table",
    ".tif": "raster",
    ".tiff": "raster",
}
MAX_COMPRESSION_RATIO = 100


def _safe_name(name: str | None) -> str:
    """The client's file name reduced to a harmless base name: no folders, no odd characters."""
    base = re.split(r"[\\/]", name or "upload")[-1]
    return re.sub(r"[^\w.\- ]", "_", base)[:100] or "upload"


def _check_archive(path: Path, limit: int) -> None:
    """XLSX files are zip archives: refuse one that would expand beyond the limit (a zip bomb)."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except zipfile.BadZipFile:
        raise DataError("The XLSX file is not a valid workbook (truncated or not XLSX).") from None
    total = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if total > limit or total / packed > MAX_COMPRESSION_RATIO:
        raise DataError(
            f"The XLSX archive expands to {total:,} bytes (×{total // packed}): refused as a "
            "possible zip bomb. Send a smaller workbook or a CSV."
        )


@router.post(
    "/uploads",
    responses={**media("application/json", model=schemas.UploadReport, status=201), **errors(401, 403, 413)},
    status_code=201,
    summary="Upload your own indicator layer (API key needed)",
)
def upload(
    request: Request,
    conn: ConnDep,
    _: ApiKey,
    file: Annotated[UploadFile, File(description="CSV, XLSX, GeoJSON, GeoPackage or GeoTIFF")],
    indicator: Annotated[str, Form(description="New indicator code: lower-case letters, digits, _")],
    name: Annotated[str | None, Form()] = None,
    theme: Annotated[str, Form(description="migration, I, II, III, IV, V or context")] = "context",
    direction: Annotated[int, Form(description="1: higher is worse; -1: higher is better")] = 1,
    unit: Annotated[str, Form()] = "as supplied",
    measure: Annotated[str, Form(description="count or rate")] = "rate",
    period: Annotated[str, Form()] = "unstated",
    key: Annotated[str, Form(description="pcode, national_code or name")] = "pcode",
    key_column: Annotated[str | None, Form()] = None,
    value_column: Annotated[str, Form()] = "value",
    department_column: Annotated[str | None, Form()] = None,
    country: Annotated[str | None, Form()] = None,
    set: Annotated[str | None, Form()] = None,
    sheet: Annotated[str | None, Form(description="XLSX sheet or GeoPackage layer")] = None,
    accept_partial: Annotated[bool, Form()] = False,
    stat: Annotated[str, Form(description="raster: mean, min, max, sum, share_above, share_below")] = "mean",
    threshold: Annotated[float | None, Form()] = None,
) -> ORJSONResponse:
    """Validate and store the layer atomically; the answer is the load report. Nothing is stored on error.
    A plain (not async) route: FastAPI runs it in its thread pool, so the reading, pandas, exactextract and
    database work of a large upload never blocks the event loop (`/health` keeps answering meanwhile)."""
    started = time.perf_counter()
    label = _safe_name(file.filename)
    suffix = Path(label).suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidParameter(
            f"Unsupported file type '{suffix or label}'; send one of {', '.join(SUFFIXES)}."
        )
    if threshold is not None and threshold != threshold:
        raise InvalidParameter("threshold must be a number.")
    settings = request.app.state.settings
    ind = user_indicator(
        indicator,
        name=name or label,
        theme=theme,
        direction=direction,
        unit=unit,
        measure=measure,
        period=period,
    )
    check_code_free(conn, ind.code)
    with tempfile.TemporaryDirectory(prefix="raices-upload-") as tmp:
        path = Path(tmp) / label  # a sanitised base name inside our own temporary folder: no traversal
        with path.open("wb") as out:
            shutil.copyfileobj(file.file, out, 1 << 20)
        if path.stat().st_size == 0:
            raise InvalidParameter("The uploaded file is empty.")
        if suffix == ".xlsx":
            _check_archive(path, settings.upload_max_uncompressed_bytes)
        spec = TableSpec(
            key=key,
            key_column=key_column or key,
            value_column=value_column,
            department_column=department_column,
            country=country,
            set_id=set,
            sheet=sheet,
            accept_partial=accept_partial,
        )
        layer = prepare_user_layer(
            conn, path, ind, spec, raster=SUFFIXES[suffix] == "raster", stat=stat, threshold=threshold
        )
        conn.rollback()  # end the read transaction before the store opens its own
        report = store_layer(request.app.state.engine, layer)
    report.seconds = time.perf_counter() - started
    return ORJSONResponse(report.as_dict(), status_code=201)


@router.delete(
    "/uploads/{indicator}",
    responses={**media("application/json", model=schemas.UploadDeleted), **errors(401, 403)},
    summary="Delete your uploaded layer (API key needed)",
)
def delete_upload(
    request: Request,
    _: ApiKey,
    indicator: Annotated[str, PathParam(description="The code the layer was uploaded under")],
) -> ORJSONResponse:
    """Removes the layer's indicator, values and provenance record in one transaction and advances the data
    epoch, so scores are recomputed without it. Only a user upload can be deleted: a bundled indicator is a
    400, an unknown code a 404. A profile that still names the indicator is refused when next scored."""
    return ORJSONResponse({"deleted": delete_user_layer(request.app.state.engine, indicator).as_dict()})
