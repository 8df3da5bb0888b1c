"""Planner reads kept whole per data epoch (app.api.response_cache) and the epoch kept in memory (app.cache):
a kept answer is the answer the route gives, needs no database round trip, and moves with the data epoch,
whether the load that moves it runs in this process or in another one (NOTIFY)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from app import cache
from app.ingest.provenance import bump_epoch
from app.main import create_app

READS = [
    "/v1/priorities?country=GTM&top=20",
    "/v1/priorities?country=HND&top=5&format=geojson",
    "/v1/municipalities/GT0101/score",
    "/v1/municipalities?q=chin",
    "/v1/municipalities?q=san&format=geojson&limit=3",
    "/tiles/priorities/7/33/57.mvt",
    "/tiles/municipalities/6/16/29.mvt",
    "/collections/priorities/items?limit=10&filter=country%3D%27GTM%27+AND+rank+%3C%3D+10",
    "/collections/municipalities/items?limit=5",
]
VARYING = {"x-request-id", "date"}


class Statements:
    """Counts the SQL statements an engine runs."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[str] = []
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.seen.append(str(args[2]))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


@pytest.fixture
def statements(engine: Engine) -> Iterator[Statements]:
    s = Statements(engine)
    yield s
    s.close()


def _served(client: TestClient) -> None:
    """Until the app's epoch watch has read the epoch (its thread starts with the app)."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    for _ in range(200):
        w = cache.watched(engine)
        if w is not None and w.current()[0] is not None:
            return
        client.get("/v1/municipalities?q=zzz")  # a request that reads the epoch stores it
        time.sleep(0.05)
    raise AssertionError("the data epoch was never known in memory")


def _same(first: Any, second: Any) -> None:
    assert second.status_code == first.status_code == 200
    strip = {k: v for k, v in first.headers.items() if k not in VARYING}
    assert {k: v for k, v in second.headers.items() if k not in VARYING} == strip
    if first.headers["content-type"].startswith("application/geo+json") and b'"timeStamp"' in first.content:
        pattern = rb'"timeStamp":"[^"]*"'
        assert re.sub(pattern, b"", second.content) == re.sub(pattern, b"", first.content)
        assert re.search(rb'"timeStamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', second.content)
    else:
        assert second.content == first.content


def test_a_kept_answer_is_the_routes_and_needs_no_database(
    client: TestClient, statements: Statements
) -> None:
    _served(client)
    for path in READS:
        first = client.get(path)
        assert first.status_code == 200, (path, first.text[:200])
        statements.seen.clear()
        second = client.get(path)
        assert statements.seen == [], path  # answered from memory: no connection, no query
        _same(first, second)
        assert second.headers["x-request-id"] != first.headers["x-request-id"]


def test_a_kept_answer_is_counted_under_its_route(client: TestClient) -> None:
    _served(client)
    path = "/v1/municipalities/GT0102/score"
    client.get(path)
    requests = client.app.state.metrics.requests  # type: ignore[attr-defined]
    counted = requests.labels("GET", "/v1/municipalities/{pcode}/score", "200")._value.get()
    assert client.get(path).status_code == 200
    assert requests.labels("GET", "/v1/municipalities/{pcode}/score", "200")._value.get() == counted + 1


def test_conditional_requests_and_errors_go_to_the_route(client: TestClient) -> None:
    _served(client)
    path = "/tiles/priorities/7/33/57.mvt"
    tag = client.get(path).headers["etag"]
    assert client.get(path).headers["etag"] == tag
    r = client.get(path, headers={"If-None-Match": tag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag
    for _ in range(2):
        bad = client.get("/v1/priorities", params={"country": "XXX"})
        assert bad.status_code == 400 and "country" in bad.json()["description"]
    for _ in range(2):
        assert client.get("/v1/municipalities/XX9999/score").status_code == 404


def test_the_answer_depends_on_what_the_route_reads(client: TestClient) -> None:
    _served(client)
    path = "/collections/priorities/items?limit=2"
    html = client.get(path, headers={"Accept": "text/html"})
    geojson = client.get(path, headers={"Accept": "application/geo+json"})
    assert html.headers["content-type"].startswith("text/html")
    assert geojson.headers["content-type"].startswith("application/geo+json")
    other_host = client.get(
        "/v1/municipalities?q=san&format=geojson&limit=3", headers={"Host": "example.org"}
    )
    assert "http://example.org/" in other_host.json()["links"][0]["href"]


def test_a_load_in_this_process_moves_the_answers_at_once(fresh: Any) -> None:
    engine, settings = fresh
    with TestClient(create_app(settings, engine)) as client:
        _served(client)
        found = client.get("/v1/municipalities", params={"q": "chinautla"}).json()["items"]
        assert [u["name"] for u in found] == ["Chinautla"]
        with engine.begin() as conn:
            conn.execute(text("UPDATE admin_units SET name = 'Chinautla (1)' WHERE pcode = 'GT0106'"))
            bump_epoch(conn, "test: a load")
            # not yet committed: other connections still read the old data
            assert client.get("/v1/municipalities", params={"q": "chinautla"}).json()["items"][0]["name"] == (
                "Chinautla"
            )
        found = client.get("/v1/municipalities", params={"q": "chinautla"}).json()["items"]
        assert [u["name"] for u in found] == ["Chinautla (1)"]
        with pytest.raises(RuntimeError), engine.begin() as conn:  # a load that fails changes nothing
            conn.execute(text("UPDATE admin_units SET name = 'Chinautla (2)' WHERE pcode = 'GT0106'"))
            bump_epoch(conn, "test: a failed load")
            raise RuntimeError("the load fails")
        found = client.get("/v1/municipalities", params={"q": "chinautla"}).json()["items"]
        assert [u["name"] for u in found] == ["Chinautla (1)"]


LOAD_ELSEWHERE = """
import sys
from sqlalchemy import create_engine, text
from app.ingest.provenance import bump_epoch
engine = create_engine(sys.argv[1])
with engine.begin() as conn:
    conn.execute(text("UPDATE admin_units SET name = 'Chinautla (elsewhere)' WHERE pcode = 'GT0106'"))
    bump_epoch(conn, "test: a load in another process")
"""


def test_a_load_in_another_process_moves_the_answers(fresh: Any) -> None:
    engine, settings = fresh
    with TestClient(create_app(settings, engine)) as client:
        _served(client)
        path = "/v1/municipalities?q=chinautla"
        assert client.get(path).json()["items"][0]["name"] == "Chinautla"
        seen = Statements(engine)
        assert client.get(path).json()["items"][0]["name"] == "Chinautla"
        assert seen.seen == []  # kept: the other process's load can only reach it by the notification
        url = engine.url.render_as_string(hide_password=False)
        subprocess.run([sys.executable, "-c", LOAD_ELSEWHERE, url], check=True, timeout=120)
        deadline = (
            time.monotonic() + 30
        )  # how long a notification may take on a loaded machine; not a speed test
        while client.get(path).json()["items"][0]["name"] == "Chinautla" and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.close()
        assert client.get(path).json()["items"][0]["name"] == "Chinautla (elsewhere)"


def test_without_the_watch_every_read_goes_to_the_table(fresh: Any) -> None:
    engine, _ = fresh
    assert cache.watched(engine) is None
    with engine.begin() as conn:
        before = cache.data_epoch(conn)
        bump_epoch(conn, "test")
        assert cache.data_epoch(conn) == before + 1  # its own transaction's bump
    with engine.connect() as conn:
        assert cache.data_epoch(conn) == before + 1


def test_the_watch_keeps_an_epoch_only_when_nothing_moved_meanwhile() -> None:
    from sqlalchemy import create_engine

    w = cache.EpochWatch(create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))  # never connects
    assert w.current() == (None, 0)
    _, generation = w.current()
    w.store(7, generation)
    assert w.current()[0] == 7 and w.changed_at == float("-inf")  # the first epoch known is no change
    w.bump_started()  # a load of this process: readers go to the table until it is back in the pool
    _, during = w.current()
    w.store(8, during)  # read inside the load's own transaction: not kept
    assert w.current()[0] is None
    w.bump_ended()
    w.store(7, during)  # read before the commit, offered after it: not kept
    assert w.current()[0] is None
    _, after = w.current()
    w.store(8, after)
    assert w.current()[0] == 8 and w.changed_at > float(
        "-inf"
    )  # a new epoch: answers by the run's TTL expire
    _, stale = w.current()
    w._set(9)  # the listener's notification
    w.store(8, stale)
    assert w.current()[0] == 9
