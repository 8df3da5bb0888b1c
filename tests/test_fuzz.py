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
  type and, when JSON, matches the documented schema;
* `test_*_statuses_documented`: every status the app answers with is documented in the spec.

The specs are read from a database-less instance of the app at import time, so that pytest can list one
case per operation; the requests go to an app on a private copy of the loaded test database (fuzzing
writes: `POST /v1/scores` caches runs), made once for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.db import make_engine
from app.main import create_app
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
_SPEC_APP = create_app(
    Settings(database_url="postgresql+psycopg://spec-only@127.0.0.1:9/none", log_level="WARNING")
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
