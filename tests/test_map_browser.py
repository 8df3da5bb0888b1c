"""The map page at /map: served offline, and driven in a real headless Chromium (Debian `chromium`, playwright-core).

The browser part starts the app with uvicorn in its own process against the test database, runs
`tests/browser/map_check.js` with node once per module, and asserts on the JSON it prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api import web
from app.settings import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = Path(__file__).parent / "browser" / "map_check.js"
WEB_FILES = ("index.html", "map.js", "map.css", "i18n.js")
BROWSER_TIMEOUT_S = 240


# ---- served by the app, offline


def test_map_page_is_html(client: TestClient) -> None:
    r = client.get("/map")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'src="map/vendor/maplibre-gl.js"' in r.text and 'src="map/static/map.js"' in r.text


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("/map/vendor/maplibre-gl.js", "text/javascript"),
        ("/map/vendor/maplibre-gl.css", "text/css"),
        ("/map/static/map.js", "text/javascript"),
        ("/map/static/i18n.js", "text/javascript"),
        ("/map/static/map.css", "text/css"),
    ],
)
def test_assets_are_served(client: TestClient, path: str, media: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith(media)
    assert len(r.content) > 100


@pytest.mark.parametrize(
    "path",
    [
        "/map/vendor/package.json",
        "/map/vendor/..%2F..%2F..%2Fpackage.json",
        "/map/static/..%2Fapi%2Fweb.py",
        "/map/static/index.html",
        "/map/static/%2Fetc%2Fpasswd",
    ],
)
def test_only_listed_assets(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_nothing_is_loaded_from_the_internet() -> None:
    for name in WEB_FILES:
        text = (web.WEB_DIR / name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


def test_503_without_node_modules(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(web, "VENDOR_DIR", tmp_path / "node_modules" / "maplibre-gl" / "dist")
    for path in ("/map", "/map/vendor/maplibre-gl.js"):
        r = client.get(path)
        assert r.status_code == 503
        assert r.json()["code"] == "ServiceUnavailable" and "npm install" in r.json()["description"]


# ---- in a real browser


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when it is missing and we are root (CI)."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0:
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (as root)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"],
            check=True,
            env=env,
            capture_output=True,
        )
    assert CHROMIUM.exists()
    return CHROMIUM


@pytest.fixture(scope="session")
def node() -> str:
    """node, with the project's npm packages (MapLibre, playwright-core) installed as `make test` does."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None:
        pytest.fail("node is missing: apt-get install -y nodejs npm")
    if not (PROJECT_ROOT / "node_modules" / "playwright-core").is_dir():
        if npm is None:
            pytest.fail("node_modules is missing and so is npm: apt-get install -y npm; npm install")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROJECT_ROOT, check=True
        )
    return node


@pytest.fixture(scope="module")
def seen(
    chromium: Path, node: str, live_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """What map_check.js saw: one browser session through the whole page (see the script)."""
    shots = tmp_path_factory.mktemp("map-screenshots")
    profile = tmp_path_factory.mktemp("chromium-profile")
    started = time.monotonic()
    done = subprocess.run(
        [node, str(SCRIPT), live_url, str(shots), str(profile), str(chromium)],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"\nmap browser check: {result['seconds']} s; screenshots {result.get('screenshots')}")
    assert "error" not in result, result["error"]
    return result


def test_page_loads_offline_without_console_errors(seen: dict[str, Any]) -> None:
    assert seen["console_errors"] == []
    assert seen["external_requests"] == []
    assert seen["failed_responses"] == []
    assert all(Path(p).stat().st_size > 10_000 for p in seen["screenshots"])


def test_tiles_render(seen: dict[str, Any]) -> None:
    assert seen["webgl"]
    assert seen["source_features"] > 500  # the municipios of three countries, some cut across tiles
    assert seen["rendered_features"] > 500


def test_table_and_downloads(seen: dict[str, Any]) -> None:
    assert seen["row_count"] > 600 and seen["default_rows"][0].startswith("GT")
    assert seen["csv_href"].endswith("/v1/priorities?format=csv")
    assert seen["gpkg_href"].endswith("/v1/priorities?format=gpkg")


def test_hover_and_click_open_the_right_panel(seen: dict[str, Any]) -> None:
    assert seen["tooltip"].startswith("Guatemala")
    panel = seen["panel"]
    assert panel["title"] == "Guatemala" and "GT0101" in panel["text"]
    assert panel["bars"] == 6 and panel["indicators"] > 0
    assert "intervalo 5–95 %" in panel["text"] and "Procedencia" in panel["text"]


def test_keyboard(seen: dict[str, Any]) -> None:
    assert seen["keyboard_panel_title"]
    assert seen["panel_closed_by_escape"]


def test_slider_reranks_and_shares(seen: dict[str, Any]) -> None:
    assert seen["scenario_hash"] and seen["scenario_hash"] != seen["default_hash"]
    assert seen["scenario_rows"][:5] != seen["default_rows"][:5]
    assert "IV=5" in seen["scenario_url"] and "migration=0.1" in seen["scenario_url"]
    csv = seen["scenario_csv"]
    assert csv["name"].endswith(".csv") and csv["header"].startswith("pcode,name,country")
    assert csv["first"] == seen["scenario_rows"][0] and csv["lines"] > 500
    restored = seen["restored"]
    assert restored["hash"] == seen["scenario_hash"] and restored["rows"] == seen["scenario_rows"]
    assert (restored["iv"], restored["migration"]) == ("5", "0.1")


def test_filter_applies_to_map_and_table(seen: dict[str, Any]) -> None:
    f = seen["filtered"]
    assert f["map_filter"] == ["all", ["==", ["get", "country"], "SLV"]]
    assert f["rendered_countries"] == ["SLV"] and f["rows"] == 44
    assert "country=SLV" in f["csv_href"]


def test_language_toggle(seen: dict[str, Any]) -> None:
    assert (seen["lang_before"], seen["lang_after"], seen["html_lang"]) == ("Filtros", "Filters", "en")
    assert "Pillar sub-scores" in seen["panel_en"]
