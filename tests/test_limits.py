"""The page size of the planner API's lists comes from the settings (RAICES_DEFAULT_LIMIT, RAICES_MAX_LIMIT),
in the answers and in the OpenAPI document alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine

from app.main import create_app
from app.settings import Settings

LISTS = ["/v1/municipalities", "/v1/priorities", "/v1/hazards/storms", "/v1/hazards/events"]


@pytest.fixture(scope="module")
def small_pages(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """An app whose lists default to 7 items and allow at most 50."""
    with TestClient(
        create_app(settings.model_copy(update={"default_limit": 7, "max_limit": 50}), engine)
    ) as c:
        yield c


@pytest.mark.parametrize("path", LISTS)
def test_default_and_maximum_come_from_the_settings(small_pages: TestClient, path: str) -> None:
    page = small_pages.get(path)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] > 50 and body["limit"] == 7 and len(body["items"]) == 7
    assert len(small_pages.get(path, params={"limit": 50}).json()["items"]) == 50
    refused = small_pages.get(path, params={"limit": 51})
    assert refused.status_code == 422
    assert refused.json() == {
        "code": "InvalidParameter",
        "description": "limit: Input should be less than or equal to 50",
    }


def test_posted_scores_take_the_same_limit(small_pages: TestClient) -> None:
    r = small_pages.post("/v1/scores", params={"limit": 51}, json={})
    assert (
        r.status_code == 422 and "limit: Input should be less than or equal to 50" in r.json()["description"]
    )


def test_openapi_states_the_settings(small_pages: TestClient, client: TestClient) -> None:
    for app_client, default, maximum in ((small_pages, 7, 50), (client, 100, 1000)):
        paths = app_client.get("/openapi.json").json()["paths"]
        for path, method in [*((p, "get") for p in LISTS), ("/v1/scores", "post")]:
            (limit,) = [p for p in paths[path][method]["parameters"] if p["name"] == "limit"]
            assert limit["schema"]["default"] == default and limit["schema"]["maximum"] == maximum, path


def test_the_defaults_are_unchanged(client: TestClient) -> None:
    body = client.get("/v1/municipalities").json()
    assert body["limit"] == 100 and len(body["items"]) == 100
    assert client.get("/v1/municipalities", params={"limit": 1000}).status_code == 200
    assert client.get("/v1/municipalities", params={"limit": 1001}).status_code == 422


def test_a_default_above_the_maximum_is_refused_at_start_up() -> None:
    with pytest.raises(
        ValidationError, match=r"RAICES_DEFAULT_LIMIT \(2000\) must not exceed RAICES_MAX_LIMIT"
    ):
        Settings(default_limit=2000)
    with pytest.raises(ValidationError):
        Settings(max_limit=0)
