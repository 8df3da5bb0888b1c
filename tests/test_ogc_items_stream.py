"""OGC items as one query streamed in chunks: the same page whole or streamed, numberMatched without a count
where the page tells it, a stream left early leaves its connection usable."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from uuid import uuid4

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DataError

from app.main import create_app
from app.ogc import collections as coll
from app.ogc import features


def _page(client: TestClient, **params: Any) -> dict[str, Any]:
    # a header of its own, so that the route answers (app.api.response_cache keys whole answers on headers)
    r = client.get("/collections/municipalities/items", params=params, headers={"X-Test": uuid4().hex})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _without_stamp(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "timeStamp"}


def test_a_streamed_page_is_the_page_sent_whole(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"limit": 300, "offset": 10, "sortby": "-area_km2", "filter": "country='GTM'"}
    whole = _page(client, **params)
    monkeypatch.setattr(features, "CHUNK_BYTES", 20_000)  # many chunks
    streamed = _page(client, **params)
    assert _without_stamp(streamed) == _without_stamp(whole)
    assert whole["numberReturned"] == len(whole["features"]) == 300 and whole["numberMatched"] == 340


@pytest.mark.parametrize("chunk", [features.CHUNK_BYTES, 5_000])
def test_number_matched_on_every_kind_of_page(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(features, "CHUNK_BYTES", chunk)
    counts: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "count(*)" in statement:
            counts.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        cases = [  # (limit, offset, returned, a count needed)
            (1000, 0, 682, False),  # the whole collection: the page tells numberMatched
            (100, 600, 82, False),  # the last page, short of its limit
            (100, 0, 100, True),  # a full page: there may be more
            (82, 600, 82, True),  # a full page that happens to end the collection
            (100, 5000, 0, True),  # past the end: only a count knows
        ]
        for limit, offset, returned, counted in cases:
            counts.clear()
            body = _page(client, limit=limit, offset=offset, properties="name")
            assert body["numberReturned"] == len(body["features"]) == returned
            assert body["numberMatched"] == 682
            rels = {link["rel"] for link in body["links"]}
            assert ("next" in rels) == (offset + limit < 682) and ("prev" in rels) == (offset > 0)
            assert bool(counts) == counted, (limit, offset)
        empty = _page(client, filter="area_km2 < 0")
        assert empty["numberMatched"] == empty["numberReturned"] == 0 and empty["features"] == []
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_stream_left_early_leaves_its_connection_usable(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(features, "CHUNK_BYTES", 5_000)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # as the route reads
        c = coll.get(conn, "municipalities")
        page = features.items_json(conn, c, coll.Context(), {"limit": "500", "geometry": "full"})
        assert not page.complete and page.first[0] >= 1
        first = orjson.loads(b"[" + page.first[1] + b"]")
        assert [f["type"] for f in first] == ["Feature"] * page.first[0]
        next(page.rest)
        page.rest.close()  # the client went away: the query is cancelled
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
        assert page.number_matched(500) == 682


def test_a_database_error_while_streaming_is_sqlalchemys(engine: Engine) -> None:
    """Errors come as from conn.execute, so the API's handlers map them (e.g. a refused value is a 400)."""
    with engine.connect() as conn, pytest.raises(DataError):
        list(features._chunks(conn, "SELECT (1 / (x - 3))::text FROM generate_series(1, 5) x", {}))


def test_requests_of_one_shape_with_other_values(client: TestClient) -> None:
    """The compiled SQL is reused for a shape of request: each request still gets its own values."""
    expected = {"GTM": 340, "HND": 298, "SLV": 44}
    for _ in range(2):
        for iso, n in expected.items():
            body = _page(client, limit=1000, filter=f"country='{iso}' AND area_km2 > 0", properties="country")
            assert body["numberMatched"] == n and {f["properties"]["country"] for f in body["features"]} == {
                iso
            }
        for isos in (("GTM", "HND"), ("SLV",), ("GTM", "HND", "SLV")):
            listed = ", ".join(f"'{i}'" for i in isos)
            body = _page(client, limit=1000, filter=f"country IN ({listed})", properties="country")
            assert body["numberMatched"] == sum(expected[i] for i in isos)
        for bbox, inside in (("-92.5,13.5,-88,18", "GTM"), ("-87.5,13,-83,16.5", "HND")):
            body = _page(client, limit=1000, bbox=bbox, properties="country")
            assert inside in {f["properties"]["country"] for f in body["features"]}


def test_without_chunked_rows_the_page_is_the_same(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older libpq has no chunked-rows mode: the rows then come one by one, the page is the same."""
    params = {"limit": 300, "offset": 10, "filter": "country='GTM'"}
    chunked = _page(client, **params)
    monkeypatch.setattr(psycopg.capabilities, "has_stream_chunked", lambda check=False: False)
    monkeypatch.setattr(features, "CHUNK_BYTES", 20_000)
    assert _without_stamp(_page(client, **params)) == _without_stamp(chunked)


def test_a_page_after_a_load_shows_the_new_data(fresh: tuple[Engine, Any]) -> None:
    """The feature heads (id and properties) are kept between requests; a load that commits a new data epoch
    is seen by the very next page, even before the serving process has heard of the new epoch."""
    engine, settings = fresh
    url = engine.url.render_as_string(hide_password=False).replace("postgresql+psycopg", "postgresql")
    with TestClient(create_app(settings, engine)) as c:

        def names() -> list[str]:
            body = _page(c, limit=3, filter="country='GTM'", properties="name,department_name")
            return [f["properties"]["name"] for f in body["features"]]

        before = names()
        assert before[0] == "Guatemala" and names() == before  # the second read uses the kept heads
        with psycopg.connect(url) as conn:  # another client's load: the app is not told in-process
            conn.execute("UPDATE admin_units SET name = 'Ciudad de Guatemala' WHERE pcode = 'GT0101'")
            conn.execute("UPDATE data_epoch SET epoch = epoch + 1 WHERE id = 1")
        assert names() == ["Ciudad de Guatemala", *before[1:]]
        assert names() == ["Ciudad de Guatemala", *before[1:]]  # and again, from heads read anew


def test_kept_heads_stay_within_their_budget(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept feature heads are bounded (HEADS_BYTES per process): beyond it the least recently used go,
    and the pages stay the same."""
    first = _page(client, limit=5, properties="name")
    monkeypatch.setattr(features, "_heads_kept", OrderedDict())  # none kept yet (restored afterwards)
    monkeypatch.setattr(features, "HEADS_BYTES", 1)  # below any one collection's heads: one kept at a time
    for props in ("name", "country", "name,country"):
        page = _page(client, limit=5, properties=props)
        assert list(page["features"][0]["properties"]) == props.split(",")
        assert len(features._heads_kept) == 1
    assert _without_stamp(_page(client, limit=5, properties="name")) == _without_stamp(first)
