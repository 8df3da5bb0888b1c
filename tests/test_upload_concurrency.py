"""A large upload is worked on off the event loop: `/health` is answered while it is still being processed.

The test does not race the clock: the upload's processing holds (in its worker thread) until `/health` has
answered, so the order is the same on a fast machine and a slow one. Were the route run on the event loop,
the hold would block the loop, `/health` could not answer until the hold timed out, and the test fails.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import rasterio
from pydantic import SecretStr
from rasterio.transform import from_origin

import app.api.uploads as uploads_route
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


def test_health_answers_during_a_large_raster_upload(fresh: Any, tmp_path: Path, monkeypatch: Any) -> None:
    engine, settings = fresh
    processing = threading.Event()  # the upload's route has reached its processing
    answered = threading.Event()  # /health has answered
    prepare = uploads_route.prepare_user_layer

    def held_prepare(*args: Any, **kwargs: Any) -> Any:
        processing.set()
        answered.wait(timeout=30)  # blocks this thread only, unless the route runs on the event loop
        return prepare(*args, **kwargs)

    monkeypatch.setattr(uploads_route, "prepare_user_layer", held_prepare)
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
                while not processing.is_set():  # wait until the upload is being processed
                    await asyncio.sleep(0.01)
                r = await client.get("/health")
                assert r.status_code == 200
                finished["health"] = time.perf_counter()
                answered.set()

            async with app.router.lifespan_context(app):
                result, _ = await asyncio.gather(upload(), health())
            return result

    response = asyncio.run(scenario())
    assert response.status_code == 201, response.text
    assert finished["health"] < finished["upload"]  # /health did not wait for the upload
