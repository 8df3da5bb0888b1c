"""Access control, limits, hostile input and headers: clear 4xx answers, never a 5xx, nothing stored."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
from fastapi.testclient import TestClient
from rasterio.transform import from_origin
from sqlalchemy import Engine, text

from app.main import create_app
from app.settings import Settings
from tests.conftest import snapshot

KEY = {"X-API-Key": "test-key-2"}


def _count(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM observations), (SELECT count(*) FROM indicators), "
                    "(SELECT count(*) FROM sources)"
                )
            ).one()
        )


@pytest.fixture
def writable(fresh: tuple[Engine, Settings]) -> Any:
    engine, settings = fresh
    with TestClient(create_app(settings, engine)) as c:
        yield c, engine


def _csv(content: str, name: str = "layer.csv") -> dict[str, Any]:
    return {"file": (name, content.encode(), "text/csv")}


def test_uploads_need_a_key(writable: Any) -> None:
    client, engine = writable
    before = _count(engine)
    r = client.post("/v1/uploads", files=_csv("pcode,value\nGT0101,1\n"), data={"indicator": "k_user"})
    assert r.status_code == 401 and "X-API-Key" in r.json()["description"]
    r = client.post(
        "/v1/uploads",
        files=_csv("pcode,value\nGT0101,1\n"),
        data={"indicator": "k_user"},
        headers={"X-API-Key": "wrong"},
    )
    assert r.status_code == 403
    assert _count(engine) == before


@pytest.mark.parametrize("kind", ["csv", "xlsx", "geojson", "gpkg"])
def test_upload_tables(writable: Any, tmp_path: Path, kind: str) -> None:
    client, engine = writable
    frame = pd.DataFrame({"pcode": ["HN0101", "HN0102"], "value": [3.5, 4.5]})
    path = tmp_path / f"layer.{kind}"
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "xlsx":
        frame.to_excel(path, index=False)
    else:
        import geopandas as gpd
        from shapely.geometry import Point

        gdf = gpd.GeoDataFrame(frame, geometry=[Point(-87, 15), Point(-87.1, 15.1)], crs=4326)
        gdf.to_file(path, driver="GeoJSON" if kind == "geojson" else "GPKG")
    r = client.post(
        "/v1/uploads",
        files={"file": (path.name, path.read_bytes())},
        data={"indicator": f"up_{kind}", "theme": "IV", "period": "2024"},
        headers=KEY,
    )
    assert r.status_code == 201, r.text
    assert r.json()["values"] == {f"up_{kind}": 2}
    with engine.connect() as conn:
        got = dict(
            conn.execute(
                text("SELECT pcode, value FROM observations WHERE indicator_code = :c"), {"c": f"up_{kind}"}
            ).all()
        )
    assert got == {"HN0101": 3.5, "HN0102": 4.5}


def test_upload_raster(writable: Any, tmp_path: Path) -> None:
    client, _ = writable
    path = tmp_path / "rain.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=50,
        width=50,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=from_origin(-89.5, 14.5, 0.02, 0.02),
    ) as dst:
        dst.write(np.full((50, 50), 2.0, dtype="float32"), 1)
    r = client.post(
        "/v1/uploads",
        files={"file": ("rain.tif", path.read_bytes())},
        data={"indicator": "rain_user", "set": "slv-2024-municipios"},
        headers=KEY,
    )
    assert r.status_code == 201, r.text
    assert r.json()["values"]["rain_user"] > 0


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/worksheets/sheet1.xml", "0" * 50_000_000)  # 50 MB of zeros packs to ~50 kB
    return buf.getvalue()


@pytest.mark.parametrize(
    ("files", "data", "status", "phrase"),
    [
        ({"file": ("bomb.xlsx", _zip_bomb())}, {"indicator": "bomb_user"}, 422, "zip bomb"),
        ({"file": ("x.exe", b"MZ")}, {"indicator": "x_user"}, 400, "Unsupported file type"),
        ({"file": ("empty.csv", b"")}, {"indicator": "e_user"}, 400, "empty"),
        (
            {"file": ("x.csv", b"pcode,value\nGT0101,1\n")},
            {"indicator": "gini"},
            400,
            "belongs to source 'gtm-a2sit'",
        ),
        ({"file": ("x.csv", b"pcode,value\nGT0101,1\n")}, {"indicator": "Bad Code!"}, 400, "lower-case"),
        (
            {"file": ("x.csv", b"pcode,value\nGT0101,nan\nGT0102,inf\n")},
            {"indicator": "n_user"},
            422,
            "text where numbers",
        ),
        (
            {"file": ("x.csv", b"pcode,value\nGT0101,1\nGT9999,2\n")},
            {"indicator": "u_user"},
            422,
            "match no unit",
        ),
        (
            {"file": ("x.csv", b"pcode,value\nGT0101,1\n")},
            {"indicator": "t_user", "theme": "VI"},
            400,
            "theme",
        ),
        (
            {"file": ("x.csv", b"pcode,value\n'; DROP TABLE observations; --,1\n")},
            {"indicator": "s_user"},
            400,
            "P-codes span several boundary sets or none",
        ),
        ({"file": ("x.tif", b"not a tiff")}, {"indicator": "r_user"}, 422, "x.tif"),
        (
            {"file": ("x.geojson", b'{"type": "FeatureCollection", "features": [')},
            {"indicator": "g_user"},
            422,
            "cannot be read",
        ),
    ],
)
def test_hostile_uploads(
    writable: Any, files: dict[str, Any], data: dict[str, str], status: int, phrase: str
) -> None:
    client, engine = writable
    before = snapshot(engine), _count(engine)
    r = client.post("/v1/uploads", files=files, data=data, headers=KEY)
    assert r.status_code == status, r.text
    body = r.json()
    assert phrase in body["description"] + " ".join(body.get("errors", []))
    assert "Traceback" not in r.text
    assert (snapshot(engine), _count(engine)) == before


def test_path_traversal_in_file_names(writable: Any, tmp_path: Path) -> None:
    client, engine = writable
    r = client.post(
        "/v1/uploads",
        files={"file": ("../../../../tmp/evil.csv", b"pcode,value\nGT0101,1\n")},
        data={"indicator": "path_user"},
        headers=KEY,
    )
    assert r.status_code == 201
    with engine.connect() as conn:
        title = conn.execute(text("SELECT title FROM sources WHERE id = 'user-path_user'")).scalar()
    assert title.endswith("evil.csv") and ".." not in title and "/" not in title
    assert not Path("/tmp/evil.csv").exists()


def test_expensive_scoring_needs_a_key(client: TestClient) -> None:
    spec = {"id": "big", "pillars": {"IV": [{"code": "crime_rate"}]}, "draws": 5000}
    assert client.post("/v1/scores", json=spec).status_code == 401
    assert client.post("/v1/scores", json=spec, headers={"X-API-Key": "nope"}).status_code == 403
    r = client.post("/v1/scores", json=spec, headers=KEY, params={"limit": 1})
    assert r.status_code == 200, r.text
    assert client.post("/v1/scores", json={**spec, "draws": 50000}, headers=KEY).status_code == 422  # capped


def _app(settings: Settings, engine: Engine, **changes: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes), engine))


def test_body_size_limit(settings: Settings, engine: Engine) -> None:
    with _app(settings, engine, max_body_bytes=2048) as c:
        big = {"id": "x", "pillars": {"IV": [{"code": "crime_rate"}]}, "description": "x" * 10_000}
        r = c.post("/v1/scores", json=big)
        assert r.status_code == 413 and "larger than 2,048 bytes" in r.json()["description"]

        def chunks() -> Any:  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b"x" * 1000

        r = c.post("/v1/scores", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_rate_limit(settings: Settings, engine: Engine) -> None:
    with _app(settings, engine, rate_limit_per_minute=5) as c:
        codes = [c.get("/v1/countries").status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[-1] == 429
        r = c.get("/v1/countries")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.get("/health").status_code == 200  # probes are never limited


def test_cors(settings: Settings, engine: Engine) -> None:
    with _app(settings, engine, cors_origins="https://planner.example.org") as c:
        ok = c.options(
            "/v1/countries",
            headers={"Origin": "https://planner.example.org", "Access-Control-Request-Method": "GET"},
        )
        assert ok.headers.get("access-control-allow-origin") == "https://planner.example.org"
        # a planner's page on another origin may delete its baseline or its uploaded layer
        delete = c.options(
            "/v1/baselines/x",
            headers={"Origin": "https://planner.example.org", "Access-Control-Request-Method": "DELETE"},
        )
        assert delete.status_code == 200 and "DELETE" in delete.headers["access-control-allow-methods"]
        other = c.get("/v1/countries", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_security_headers_and_request_ids(client: TestClient) -> None:
    r = client.get("/v1/countries", headers={"X-Request-ID": "abc123"})
    assert r.headers["x-request-id"] == "abc123"
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert len(client.get("/v1/countries").headers["x-request-id"]) == 32


def test_internal_errors_leak_nothing(settings: Settings, engine: Engine) -> None:
    app = create_app(settings, engine)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret connection string postgresql://user:pw@host/db")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500
    assert "secret" not in r.text and "postgresql" not in r.text and "reference" in r.json()["description"]


def test_deeply_nested_json(client: TestClient) -> None:
    body = "[" * 100_000 + "]" * 100_000
    r = client.post("/v1/scores", content=body.encode(), headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


@pytest.mark.parametrize(
    "value", ["'; DROP TABLE admin_units; --", "1 OR 1=1", "\u0000", "NaN", "Infinity", "-1e309", "x" * 5000]
)
def test_hostile_strings_in_every_query_parameter(client: TestClient, engine: Engine, value: str) -> None:
    before = snapshot(engine)
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        op = item.get("get")
        if not op or "{" in path:
            continue
        for p in op.get("parameters", []):
            if p["in"] == "query":
                r = client.get(path, params={p["name"]: value})
                assert r.status_code < 500, (path, p["name"], r.text[:200])
    assert snapshot(engine) == before


def test_metrics_and_ready(client: TestClient) -> None:
    client.get("/v1/countries")
    m = client.get("/metrics")
    assert m.status_code == 200 and 'raices_http_requests_total{method="GET",route="/v1/countries"' in m.text
    r = client.get("/ready").json()
    assert r["ready"] is True and r["problems"] == []


def test_ready_503_on_an_empty_database(empty: tuple[Engine, Settings]) -> None:
    engine, settings = empty
    with TestClient(create_app(settings, engine)) as c:
        r = c.get("/ready")
    assert r.status_code == 503 and "no boundaries loaded" in r.json()["problems"][0]
