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

import httpx
import pytest
from fastapi.testclient import TestClient

from app import baselines
from app.api import web
from app.db import make_engine
from app.settings import PROJECT_ROOT, Settings

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = Path(__file__).parent / "browser" / "map_check.js"
WEB_FILES = ("index.html", "map.js", "map.css", "i18n.js")
BROWSER_TIMEOUT_S = 420  # the whole walk, fitted profile and validation included
DEFAULT = "root-causes-2021"
REGION = "northern-triangle-2021"  # scope "region": one ranking across the three countries
EMPIRICAL = "empirical-2021"  # fitted to observed out-migration: no weights, a fit per country
FIT_TIMEOUT_S = 300  # the first request of a fitted profile fits it (30–60 s here)
REFERENCE_ROWS = 30  # Guatemala's top municipios of the default profile, their score as the value
TOP_COEFFICIENTS = 5
BASELINE = "browser-region"  # the newest baseline when the map's change mode opens


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
def empirical(live_url: str) -> dict[str, Any]:
    """/v1/profiles/empirical-2021 from the live server: its first request fits the profile, so the page's
    own requests later find the run stored (the page's loading state is tested by holding its request)."""
    r = httpx.get(f"{live_url}/v1/profiles/{EMPIRICAL}", timeout=FIT_TIMEOUT_S)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["fit"]["countries"]
    return body


@pytest.fixture(scope="module")
def reference(live_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Reference tables for the validation panel: reference.csv (Guatemala's top municipios of the default
    profile with their own score as the value, so Spearman is 1, and one P-code written without its zero
    that matches nothing) and bad.csv (text where a number belongs); with the service's answer to each."""
    folder = tmp_path_factory.mktemp("references")
    items = _get(live_url, "/v1/priorities", country="GTM", limit=REFERENCE_ROWS)["items"]
    lines = ["pcode,value", *(f"{i['pcode']},{i['score']}" for i in items), "GT101,50"]
    (folder / "reference.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "bad.csv").write_text("pcode,value\nGT0101,1\nGT0102,many\n", encoding="utf-8")
    fields = {"measures": "score of the default profile", "source": "Raíces test", "period": "2021"}
    answers = {}
    for name in ("reference.csv", "bad.csv"):
        files = {"file": (name, (folder / name).read_bytes(), "text/csv")}
        answers[name] = httpx.post(f"{live_url}/v1/validation", data=fields, files=files, timeout=120)
    assert answers["reference.csv"].status_code == 200, answers["reference.csv"].text
    assert answers["bad.csv"].status_code == 422
    return {
        "folder": folder,
        "pcodes": [i["pcode"] for i in items],
        "answer": answers["reference.csv"].json(),
        "bad": answers["bad.csv"].json(),
    }


@pytest.fixture(scope="module")
def baseline(settings: Settings, loaded_url: str) -> str:
    """A baseline of the regional profile in the shared database (a row and its frozen values; the data are
    untouched): the map's change mode compares the default profile now with it, so municipios do move."""
    engine = make_engine(settings, loaded_url)
    try:
        with engine.connect() as conn:
            if BASELINE in [b.name for b in baselines.all_baselines(conn)]:
                return BASELINE
        baselines.create(engine, BASELINE, REGION)
    finally:
        engine.dispose()
    return BASELINE


@pytest.fixture(scope="module")
def seen(
    chromium: Path,
    node: str,
    live_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    empirical: dict[str, Any],
    reference: dict[str, Any],
    baseline: str,
) -> dict[str, Any]:
    """What map_check.js saw: one browser session through the whole page (see the script)."""
    shots = tmp_path_factory.mktemp("map-screenshots")
    profile = tmp_path_factory.mktemp("chromium-profile")
    started = time.monotonic()
    done = subprocess.run(
        [node, str(SCRIPT), live_url, str(shots), str(profile), str(chromium), str(reference["folder"])],
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
    # the bad reference file's 422 is asked for (and is the only failed response); the browser reports it
    # as a console error of the failed resource
    validation = [r for r in seen["failed_responses"] if "/v1/validation" in r]
    assert [r.split()[0] for r in validation] == ["422"]
    assert [r for r in seen["failed_responses"] if r not in validation] == []
    assert [e for e in seen["console_errors"] if "status of 422" not in e] == []
    assert seen["external_requests"] == []
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


# ---- the profile selector (the regional profile next to the default)


def _get(live_url: str, path: str, **params: str | int) -> Any:
    """What the service itself answers, to compare the page with."""
    r = httpx.get(f"{live_url}{path}", params=params, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_selector_lists_the_bundled_profiles(seen: dict[str, Any], live_url: str) -> None:
    bundled = {p["id"]: p["spec"]["title"] for p in _get(live_url, "/v1/profiles")["items"]}
    options = dict(seen["profile_options"])
    assert REGION in options and sorted(options) == sorted(bundled)
    assert seen["profile_options"][0][0] == DEFAULT  # the default first, and chosen
    assert all(bundled[i] in label and i in label for i, label in options.items())
    d = seen["profile_default"]
    assert d["selected"] == DEFAULT and "profile=" not in d["url"] and d["rank_head"] == "#"
    assert "Una clasificación por país" in d["scope_note"] and not d["colour_by_pcode"]


def test_region_profile_shows_its_own_ranking(seen: dict[str, Any], live_url: str) -> None:
    api = _get(live_url, "/v1/priorities", profile=REGION, limit=1000)
    expected = sorted(api["items"], key=lambda i: (i["rank_region"], i["pcode"]))
    r = seen["region"]
    assert r["selected"] == REGION and r["profile_id"] == REGION and r["hash"] == api["profile"]["hash"]
    # the whole table is the region's ranking, rank 1 first, whatever the country
    assert [row[0] for row in r["rows"]] == [i["pcode"] for i in expected]
    assert r["rows"][0] == [expected[0]["pcode"], "1", expected[0]["country"]]
    assert [int(row[1]) for row in r["rows"]] == [i["rank_region"] for i in expected]
    assert r["rows"][0][0] != seen["profile_default"]["rows"][0][0]
    # the table says what the rank means, with the profile's title and its description behind "Método"
    assert r["rank_head"] == "# región"
    assert api["profile"]["title"] in r["scope_note"]
    assert "Una sola clasificación para los tres países" in r["scope_note"]
    spec = _get(live_url, f"/v1/profiles/{REGION}")["spec"]
    assert r["method"] == spec["description"]
    # the map is coloured from this profile's scores, the URL and the downloads name it
    assert r["colour_by_pcode"] and r["rendered_features"] > 500
    assert "profile=northern-triangle-2021" in r["url"]
    assert r["csv_href"].endswith(f"/v1/priorities?profile={REGION}&format=csv")
    assert "Puesto 1 (región)" in seen["region_panel"]


def test_region_profile_country_filter(seen: dict[str, Any], live_url: str) -> None:
    api = _get(live_url, "/v1/priorities", profile=REGION, country="SLV", limit=1000)
    slv = seen["region_slv"]
    assert {row[2] for row in slv["rows"]} == {"SLV"} and len(slv["rows"]) == api["total"]
    # still the region's ranks, not 1…44
    assert [int(row[1]) for row in slv["rows"]] == sorted(i["rank_region"] for i in api["items"])
    assert "country=SLV" in slv["url"] and "profile=northern-triangle-2021" in slv["url"]


def test_region_profile_survives_reload(seen: dict[str, Any]) -> None:
    again = seen["region_reloaded"]
    assert again["selected"] == REGION and again["profile_id"] == REGION
    assert again["rows"] == seen["region"]["rows"] and again["hash"] == seen["region"]["hash"]


def test_pillars_without_data_have_no_slider(seen: dict[str, Any]) -> None:
    region = seen["region"]
    assert region["sliders"] == [["I", "1"], ["migration", "0.5"]]
    assert [p for p, _ in region["no_data_pillars"]] == ["II", "III", "IV", "V"]
    assert all(text.endswith("sin datos") for _, text in region["no_data_pillars"])
    default = seen["back_to_default"]
    assert [k for k, _ in default["sliders"]] == ["I", "II", "III", "IV", "V", "migration"]
    assert default["no_data_pillars"] == [] and default["rank_head"] == "#"
    assert "profile=" not in default["url"] and not default["colour_by_pcode"]
    assert default["rows"] == seen["profile_default"]["rows"]


def test_region_scenario_posts_the_region_profile(seen: dict[str, Any]) -> None:
    s = seen["region_scenario"]
    assert s["posted"] and s["posted"][-1] == {
        "scope": "region",
        "pillars": ["I"],
        "pillar_weights": {"I": 1},
        "migration_weight": 0.2,
    }
    assert s["profile_id"] == "map-scenario" and s["hash"] != seen["region"]["hash"]
    assert "profile=northern-triangle-2021" in s["url"] and "migration=0.2" in s["url"]
    assert "II=" not in s["url"] and s["rank_head"] == "# región"


# ---- a fitted profile: no weights, its fit per country


def _es(value: float | None, digits: int = 2) -> str:
    """A number as the page shows it in Spanish (Intl.NumberFormat('es'), at most `digits` decimals)."""
    if value is None:
        return "–"
    text = f"{round(value, digits):.{digits}f}".rstrip("0").rstrip(".")
    return ("0" if text == "-0" else text).replace(".", ",")


def test_fitted_profile_has_no_sliders(seen: dict[str, Any]) -> None:
    e = seen["empirical"]
    assert e["selected"] == EMPIRICAL and e["profile_id"] == EMPIRICAL
    assert e["sliders"] == [] and e["no_data_pillars"] == [] and e["reset_hidden"]
    assert "los pesos no se aplican" in e["weights_note"]
    assert "profile=empirical-2021" in e["url"] and e["colour_by_pcode"]
    # back on the default profile: its sliders, no fit box
    back = seen["empirical_back"]
    assert [k for k, _ in back["sliders"]] == ["I", "II", "III", "IV", "V", "migration"]
    assert back["weights_note"] is None and not back["reset_hidden"] and not back["fit_visible"]
    assert not seen["profile_default"]["colour_by_pcode"]


def test_fit_box_loads_without_blocking_the_page(seen: dict[str, Any], live_url: str) -> None:
    loading = seen["empirical_loading"]
    assert loading["held_requests"] == 1  # the page asked for the fit once, and it was still pending
    assert loading["fit_visible"] and loading["fit_status"] == "loading" and loading["fit_busy"] == "true"
    assert "calculando el ajuste" in loading["fit_text"] and loading["fit_countries"] == []
    # meanwhile the table of the fitted profile was read in full
    api = _get(live_url, "/v1/priorities", profile=EMPIRICAL, limit=1000)
    assert [r[0] for r in loading["rows"]] == [i["pcode"] for i in api["items"]]
    assert loading["hash"] == api["profile"]["hash"]


def test_fit_box_shows_the_fit_of_the_api(seen: dict[str, Any], empirical: dict[str, Any]) -> None:
    e = seen["empirical"]
    assert e["fit_visible"] and e["fit_status"] == "ready" and e["fit_busy"] == "false"
    assert "Asociación, no causa" in e["fit_text"]
    api = {c["country"]: c for c in empirical["fit"]["countries"]}
    shown = e["fit_countries"]
    assert [c["country"] for c in shown] == sorted(api, key=["GTM", "HND", "SLV"].index)
    for c in shown:
        a = api[c["country"]]
        assert c["status"] == a["status"] and c["units"] == str(a["units_with_outcome"])
        if a["status"] != "fitted":
            assert c["spearman"] is None and c["coefficients"] == []
            continue
        assert "ajustado" in c["heading"]
        assert c["spearman"] == _es(a["out_of_sample"]["spearman"])
        assert c["r2"] == _es(a["out_of_sample"]["r2"])
        largest = [k for k in a["coefficients"] if k["coefficient"] != 0][:TOP_COEFFICIENTS]
        assert [k[:3] for k in c["coefficients"]] == [
            [k["code"], k["pillar"], k["coefficient"]] for k in largest
        ]
        signs = ["+" if k["coefficient"] > 0 else "−" for k in largest]
        assert [k[3][0] for k in c["coefficients"]] == signs
    # Guatemala (340 municipios with deportees) is fitted, with at least three drivers kept
    assert api["GTM"]["status"] == "fitted"
    assert len(next(c for c in shown if c["country"] == "GTM")["coefficients"]) >= 3


def test_fit_box_in_english(seen: dict[str, Any]) -> None:
    en = seen["empirical_en"]
    assert "Association, not cause" in en["fit_text"] and "out of sample" in en["fit_text"]
    assert "weights do not apply" in en["weights_note"]
    es = seen["empirical"]["fit_countries"]
    assert [[k[:3] for k in c["coefficients"]] for c in en["fit_countries"]] == [
        [k[:3] for k in c["coefficients"]] for c in es
    ]
    # the same figures in English number format: a decimal point, not a comma
    assert [c["spearman"] for c in en["fit_countries"]] == [
        c["spearman"].replace(",", ".") if c["spearman"] else None for c in es
    ]


# ---- validation against a reference table


def test_validation_posts_a_form_with_the_profile(seen: dict[str, Any]) -> None:
    posted = seen["validation"]["posted"]
    assert len(posted) == 1 and posted[0]["content_type"] == "multipart/form-data"
    fields = posted[0]["fields"]
    assert fields["file"] == "file:reference.csv" and fields["profile"] == DEFAULT
    assert (fields["measures"], fields["source"], fields["period"]) == (
        "score of the default profile",
        "Raíces test",
        "2021",
    )
    assert (fields["per_capita"], fields["direction"], fields["top_k"]) == ("false", "1", "20")


def test_validation_shows_the_agreement_figures(seen: dict[str, Any], reference: dict[str, Any]) -> None:
    v, api = seen["validation"], reference["answer"]
    assert v["error_hidden"]
    assert v["counts"] == {"rows": str(REFERENCE_ROWS + 1), "matched": str(REFERENCE_ROWS), "unmatched": "1"}
    assert api["matched"] == REFERENCE_ROWS and api["reference"]["rows"] == REFERENCE_ROWS + 1
    assert "score of the default profile" in v["ref"] and DEFAULT in v["ref"]
    [gtm] = v["countries"]
    units = api["countries"]["GTM"]["units"]
    assert gtm["country"] == "GTM"
    # the reference is the score itself: Spearman 1 with a degenerate interval
    assert units["spearman"]["rho"] == 1.0
    assert gtm["spearman_units"] == f"1 (95 %: 1 – 1; n = {REFERENCE_ROWS})"
    k = units["top_k"]
    assert gtm["top_k"].startswith(f"{k['overlap']} de {k['k']} (azar: {_es(k['expected_by_chance'], 1)};")
    t1 = units["tier1"]
    assert gtm["tier1"].startswith(
        f"{t1['hits']} de {t1['k']} (100 %; azar: {_es(t1['expected_by_chance'], 1)},"
    )
    deps = api["countries"]["GTM"]["departments"]["spearman"]
    if deps["rho"] is None:  # the service's note, in Spanish
        assert gtm["spearman_departments"] == f"menos de 5 pares: sin correlación (n = {deps['n']})"
    else:
        assert gtm["spearman_departments"].startswith(f"{_es(deps['rho'])} (95 %:")


def test_validation_plots_one_point_per_matched_row(seen: dict[str, Any], reference: dict[str, Any]) -> None:
    [gtm] = seen["validation"]["countries"]
    points = gtm["points"]
    assert sorted(p[0] for p in points) == sorted(reference["pcodes"])
    assert sorted(p[0] for p in points) == sorted(
        p["pcode"] for p in reference["answer"]["countries"]["GTM"]["pairs"]
    )
    assert gtm["svg_label"].endswith(f"{REFERENCE_ROWS} puntos")
    # value on x, score on y (SVG y grows downwards): equal values and scores lie on a rising line
    by_x = [p[0] for p in sorted(points, key=lambda p: (p[1], -p[2]))]
    by_y = [p[0] for p in sorted(points, key=lambda p: (-p[2], p[1]))]
    assert by_x == by_y and points[0][1] != points[-1][1]


def test_validation_lists_unmatched_rows_with_suggestions(seen: dict[str, Any]) -> None:
    [row] = seen["validation"]["unmatched"]
    assert "GT101" in row["text"] and "¿Quiso decir" in row["text"]
    assert row["suggestions"][0] == "GT0101"
    assert seen["suggestion_panel"] == "Guatemala"  # the suggestion opens its municipio


def test_validation_in_english(seen: dict[str, Any]) -> None:
    en = seen["validation_en"]
    assert en["counts_text"].startswith(f"rows read {REFERENCE_ROWS + 1} · matched {REFERENCE_ROWS}")
    assert en["countries"][0]["svg_label"].endswith(f"{REFERENCE_ROWS} points")


def test_validation_error_shows_the_service_message(seen: dict[str, Any], reference: dict[str, Any]) -> None:
    bad = seen["validation_bad"]
    assert bad["posts"] == 2 and not bad["error_hidden"]
    assert reference["bad"]["description"] in bad["error"] and "'many'" in bad["error"]
    assert bad["error"].startswith("La referencia no se pudo comparar")
    assert bad["countries"] == [] and bad["counts"] == {}  # the previous figures are gone


# ---- change since a baseline, and a municipio's series


def test_change_mode_colours_by_the_change_of_the_api(seen: dict[str, Any], live_url: str) -> None:
    c = seen["change_mode"]
    assert c["checked"] == "change" and c["baseline"] == BASELINE and c["baseline_visible"]
    assert "color=change" in c["url"] and f"baseline={BASELINE}" in c["url"]
    api = _get(live_url, "/v1/priorities/changes", baseline=BASELINE, profile=DEFAULT, limit=1000)
    expected = {i["pcode"]: i["change"]["score"] for i in api["items"] if i["change"]["score"] is not None}
    assert c["values"] == expected and any(v != 0 for v in expected.values())
    # PuOr, seven classes, then "not ranked"
    assert c["legend_colours"][:7] == [
        "rgb(84, 39, 136)",
        "rgb(153, 142, 195)",
        "rgb(216, 218, 235)",
        "rgb(247, 247, 247)",
        "rgb(254, 224, 182)",
        "rgb(241, 163, 64)",
        "rgb(179, 88, 6)",
    ]
    assert '"step"' in c["paint"] and "#b35806" in c["paint"] and "puntaje ahora" in c["legend"]
    assert c["rendered_features"] > 0


def test_change_panel_and_series_chart(seen: dict[str, Any], live_url: str) -> None:
    p = seen["change_panel"]
    assert p["baseline"] == BASELINE and p["pcode"].startswith("SVM")
    api = _get(
        live_url, "/v1/priorities/changes", baseline=BASELINE, profile=DEFAULT, country="SLV", limit=100
    )
    item = next(i for i in api["items"] if i["pcode"] == p["pcode"])
    score = p["rows"][0]
    assert score[1] == _es(item["then"]["score"], 1) and score[2] == _es(item["now"]["score"], 1)
    assert p["rows"][1][1:3] == [str(item["then"]["rank"]), str(item["now"]["rank"])]
    series = _get(
        live_url, f"/v1/municipalities/{p['pcode']}/series", indicator="slv_emigrants_per_1000_year"
    )
    assert p["series_indicator"] == "slv_emigrants_per_1000_year"
    assert p["series_points"] == [[i["period"], "partial_year" in i["flags"]] for i in series["items"]]
    assert p["series_points"][-1] == ["2024", True]  # the census year is drawn as partial
