"""A large upload is worked on off the event loop: `/health` is answered while it is still being processed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import rasterio
from pydantic import SecretStr
from rasterio.transform import from_origin

from app.main import create_app

KEY = "concurrency-key"


def big_raster(path: Path) -> Path:
    """A 4,000 × 4,000 raster over Central America: seconds of zonal statistics for every municipio."""
    ramp = np.linspace(0, 100, 4000)
    data = np.add.outer(ramp, ramp).astype("uint8")  # smooth bytes: the compressed file stays small
    profile = {
        "driver": "GTiff",
        "height": 4000,
        "width": 4000,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:4326",
        "transform": from_origin(-92.5, 18.0, 0.002, 0.002),
        "nodata": 255,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def test_health_answers_during_a_large_raster_upload(fresh: Any, tmp_path: Path) -> None:
    engine, settings = fresh
    app = create_app(
        settings.model_copy(update={"api_keys": SecretStr(KEY), "rate_limit_per_minute": 0}), engine
    )
    tif = big_raster(tmp_path / "big.tif").read_bytes()
    assert len(tif) < settings.max_body_bytes
    finished: dict[str, float] = {}

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=300) as client:

            async def upload() -> httpx.Response:
                r = await client.post(
                    "/v1/uploads",
                    files={"file": ("big.tif", tif, "image/tiff")},
                    data={"indicator": "big_user", "set": "gtm-municipios"},
                    headers={"X-API-Key": KEY},
                )
                finished["upload"] = time.perf_counter()
                return r

            async def health() -> None:
                await asyncio.sleep(0.5)  # the upload is under way by then
                r = await client.get("/health")
                assert r.status_code == 200
                finished["health"] = time.perf_counter()

            async with app.router.lifespan_context(app):
                result, _ = await asyncio.gather(upload(), health())
            return result

    response = asyncio.run(scenario())
    assert response.status_code == 201, response.text
    assert finished["health"] < finished["upload"]  # /health did not wait for the upload
