"""Fuzzing both published specs with schemathesis, in process (ASGI), against the test database.

Two specs: the planner API (FastAPI's `/openapi.json`, OpenAPI 3.1) and the OGC API Features part
(the hand-written OpenAPI 3.0 at `/api`). For every operation schemathesis sends the spec's examples,
boundary values (its coverage phase) and random valid and invalid requests (positive and negative
fuzzing), bounded by `MAX_EXAMPLES` per operation and seeded, so a run is reproducible and the whole
file stays within about two minutes.

Three properties per spec, in separate tests so that one cannot hide another (Hypothesis stops an
operation at its first failing example):

* `test_*_no_server_error`: never a 5xx, whatever the input;
* `test_*_responses_conform`: every response whose status the spec documents has a documented media
  type and, when JSON, matches the documented schema (typed: pydantic models of app/ogc/schemas.py and
  app/api/schemas.py, extra members forbidden; `test_schemas_reject_doctored_responses` shows they can fail);
* `test_*_statuses_documented`: every status the app answers with is documented in the spec.

The specs are read from a database-less instance of the app at import time, so that pytest can list one
case per operation; the requests go to an app on a private copy of the loaded test database (fuzzing
writes: `POST /v1/scores` caches runs), made once for the module.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from openapi_schema_validator import OAS30Validator, OAS31Validator
from openapi_spec_validator import validate as validate_spec
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.db import make_engine
from app.main import create_app
from app.ogc.schemas import STATIC_COLLECTIONS
from app.settings import Settings
from tests.conftest import PG, make_settings

MAX_EXAMPLES = 15  # per operation and test, for the random (fuzzing) phase
SEED = 20210729
API_KEY = "fuzz-key-not-a-secret"

FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # no "explain" phase: it reruns failing examples many times to comment on them
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)

CONFIG = schemathesis.Config.from_dict(
    {"seed": SEED, "generation": {"deterministic": True, "max-examples": MAX_EXAMPLES, "mode": "all"}}
)

# Only the spec is read from this instance (neither spec endpoint touches the database); the port is
# never listened on, so a request that reached it by mistake would fail, not pass.
# No job worker either: it would keep trying to reach that port in the background.
_SPEC_APP = create_app(
    Settings(
        database_url="postgresql+psycopg://spec-only@127.0.0.1:9/none",
        log_level="WARNING",
        inprocess_worker=False,
    )
)
planner = schemathesis.openapi.from_asgi("/openapi.json", _SPEC_APP, config=CONFIG)
ogc = schemathesis.openapi.from_asgi("/api", _SPEC_APP, config=CONFIG)

NO_5XX = [not_a_server_error]
CONFORM = [content_type_conformance, response_schema_conformance]
STATUSES = [status_code_conformance]


@pytest.fixture(scope="module")
def fuzz_app(pg: PG, loaded_template: str, cache_dir: Path) -> Iterator[FastAPI]:
    """The app on a private copy of the loaded database."""
    name = f"fuzz_{uuid4().hex[:8]}"
    url = pg.create(name, template=loaded_template)
    # with a key, so that the authenticated operations (uploads, large Monte Carlo runs) are fuzzed
    # beyond their 401; without the rate limit, which fuzzing's hundreds of requests a minute from one
    # client would trip (both are tested in their own right elsewhere)
    s = make_settings(url, cache_dir, log_level="WARNING", api_keys=API_KEY, rate_limit_per_minute=0)
    engine = make_engine(s, url)
    try:
        yield create_app(s, engine)
    finally:
        engine.dispose()
        pg.drop(name)


@planner.parametrize()
@FUZZ
def test_planner_api_no_server_error(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app, headers={"X-API-Key": API_KEY}, checks=NO_5XX)


@planner.parametrize()
@FUZZ
def test_planner_api_responses_conform(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app, headers={"X-API-Key": API_KEY}, checks=CONFORM)


@planner.parametrize()
@FUZZ
def test_planner_api_statuses_documented(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app, headers={"X-API-Key": API_KEY}, checks=STATUSES)


@ogc.parametrize()
@FUZZ
def test_ogc_api_no_server_error(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app, headers={"X-API-Key": API_KEY}, checks=NO_5XX)


@ogc.parametrize()
@FUZZ
def test_ogc_api_responses_conform(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app, headers={"X-API-Key": API_KEY}, checks=CONFORM)


@ogc.parametrize()
@FUZZ
def test_ogc_api_statuses_documented(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app, headers={"X-API-Key": API_KEY}, checks=STATUSES)


# --- the documented schemas are real: valid OpenAPI, typed, and able to reject a wrong response ---------------

OGC_DOC: dict[str, Any] = ogc.raw_schema
PLANNER_DOC: dict[str, Any] = planner.raw_schema


def test_specs_are_valid_openapi() -> None:
    """/api is valid OpenAPI 3.0 (nullable members spelled `nullable: true`, no JSON Schema 2020 keywords),
    /openapi.json valid OpenAPI 3.1."""
    assert OGC_DOC["openapi"].startswith("3.0") and PLANNER_DOC["openapi"].startswith("3.1")
    validate_spec(OGC_DOC)
    validate_spec(PLANNER_DOC)


def _json_schemas(doc: dict[str, Any], media: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                content = response.get("content", {}) if status.startswith("2") else {}
                for media_type, body in content.items():
                    if media_type in media:
                        yield f"{method.upper()} {path} {status} {media_type}", body.get("schema", {})


def test_every_json_response_is_typed() -> None:
    """No successful JSON answer is documented as a bare object (what the fuzzing could not fail on): each
    names a component schema or lists its properties. Planner GeoJSON answers stay generic objects."""
    ogc_media = ("application/json", "application/geo+json", "application/schema+json")
    found = [*_json_schemas(OGC_DOC, ogc_media), *_json_schemas(PLANNER_DOC, ("application/json",))]
    assert len(found) > 30
    untyped = [where for where, schema in found if "$ref" not in schema and "properties" not in schema]
    assert untyped == []
    paths = OGC_DOC["paths"]
    for cid, name in (("priorities", "Priorities"), ("hurricane-tracks", "HurricaneTracks")):
        items = paths[f"/collections/{cid}/items"]["get"]["responses"]["200"]["content"]
        assert items["application/geo+json"]["schema"] == {
            "$ref": f"#/components/schemas/{name}FeatureCollection"
        }


def test_every_static_collection_has_typed_paths(fuzz_app: FastAPI) -> None:
    """Every collection but the municipalities-<set> ones has its own typed items paths in /api: a new
    collection must be added to app/ogc/schemas.py STATIC_COLLECTIONS (else only the generic feature
    documents it)."""
    ids = {c["id"] for c in TestClient(fuzz_app).get("/collections").json()["collections"]}
    static = {i for i in ids if not i.startswith("municipalities-")}
    assert static == set(STATIC_COLLECTIONS), (
        "add the new collection to app/ogc/schemas.py STATIC_COLLECTIONS"
    )
    for cid in static:
        assert f"/collections/{cid}/items" in OGC_DOC["paths"]
        assert f"/collections/{cid}/items/{{featureId}}" in OGC_DOC["paths"]


def _validator(doc: dict[str, Any], name: str, cls: Any) -> Any:
    return cls({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def _rejected(validator: Any, body: Any) -> list[str]:
    return [e.message for e in validator.iter_errors(body)]


def test_schemas_reject_doctored_responses(fuzz_app: FastAPI) -> None:
    """A real response validates against its documented schema; the same response with a wrong-typed property,
    an extra property or a malformed geometry does not. So the conformance tests above can fail."""
    client = TestClient(fuzz_app)
    ogc_page = client.get("/collections/priorities/items", params={"limit": 5}).json()
    v = _validator(OGC_DOC, "PrioritiesFeatureCollection", OAS30Validator)
    assert _rejected(v, ogc_page) == []
    unranked = copy.deepcopy(ogc_page)
    unranked["features"][0]["properties"].update(score=None, rank=None, tier=None)  # nullable: allowed
    assert _rejected(v, unranked) == []
    for doctor in (
        lambda d: d["features"][0]["properties"].update(score="high"),
        lambda d: d["features"][0]["properties"].update(rank=1.5),
        lambda d: d["features"][0]["properties"].update(colour="red"),
        lambda d: d["features"][1].update(geometry={"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
        lambda d: d.update(numberMatched="5"),
        lambda d: d.update(extra=True),
    ):
        bad = copy.deepcopy(ogc_page)
        doctor(bad)
        assert _rejected(v, bad)
    track = client.get("/collections/hurricane-tracks/items", params={"limit": 1}).json()
    assert _rejected(_validator(OGC_DOC, "HurricaneTracksFeatureCollection", OAS30Validator), track) == []
    bad = copy.deepcopy(track)
    bad["features"][0]["properties"]["fixes"] = "many"
    assert _rejected(_validator(OGC_DOC, "HurricaneTracksFeatureCollection", OAS30Validator), bad)

    planner_page = client.get("/v1/priorities", params={"limit": 5}).json()
    v = _validator(PLANNER_DOC, "Priorities", OAS31Validator)
    assert _rejected(v, planner_page) == []
    for doctor in (
        lambda d: d["items"][0].update(score="high"),
        lambda d: d["items"][0].update(surprise=1),
        lambda d: d["items"][0].pop("ranked"),
        lambda d: d["items"][0]["department"].update(pcode=7),
        lambda d: d.update(total=-1),
    ):
        bad = copy.deepcopy(planner_page)
        doctor(bad)
        assert _rejected(v, bad)


@pytest.mark.parametrize(
    ("route", "path", "params"),
    [
        ("/v1/municipalities", "/v1/municipalities", {"limit": 5}),
        ("/v1/municipalities/{pcode}", "/v1/municipalities/GT0101", {}),
        ("/v1/zones", "/v1/zones", {}),
        ("/v1/hazards/storms", "/v1/hazards/storms", {"limit": 3}),
        (
            "/v1/indicators/{code}/values",
            "/v1/indicators/dirt_floor_pct_2007/values",
            {"limit": 5, "country": "SLV"},
        ),
    ],
)
def test_geojson_answers_match_their_documented_schema(
    fuzz_app: FastAPI, route: str, path: str, params: dict[str, Any]
) -> None:
    """The planner API documents its GeoJSON answers (FeatureCollections of the JSON answer's items, or one
    Feature); a real answer validates, and one with a property of the wrong type or an extra one does not."""
    documented = PLANNER_DOC["paths"][route]["get"]["responses"]["200"]["content"]
    validator = OAS31Validator(
        {**documented["application/geo+json"]["schema"], "components": PLANNER_DOC["components"]}
    )
    r = TestClient(fuzz_app).get(path, params={**params, "format": "geojson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json"), r.text
    body = r.json()
    assert _rejected(validator, body) == []
    feature = body["features"][0] if body["type"] == "FeatureCollection" else body
    for doctor in (
        lambda f: f["properties"].update(surprise=1),
        lambda f: f["properties"].update({next(iter(f["properties"])): {"not": "a scalar"}}),
        lambda f: f.update(type="Point"),
    ):
        bad = copy.deepcopy(body)
        doctor(bad["features"][0] if bad["type"] == "FeatureCollection" else bad)
        assert _rejected(validator, bad), (path, feature["properties"])
