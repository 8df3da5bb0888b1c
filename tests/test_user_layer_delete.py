"""A user layer can be deleted through the API and the CLI: its indicator, values and source go in one
transaction, the data epoch moves (so scores are recomputed without it), and nothing else can be deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.main import create_app
from app.settings import Settings

KEY = {"X-API-Key": "test-key-1"}


def _state(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM observations), (SELECT count(*) FROM indicators), "
                    "(SELECT count(*) FROM sources), (SELECT epoch FROM data_epoch)"
                )
            ).one()
        )


@pytest.fixture
def client(fresh: tuple[Engine, Settings]) -> Any:
    engine, settings = fresh
    with TestClient(create_app(settings, engine)) as c:
        yield c, engine


def _upload(client: TestClient, code: str) -> None:
    r = client.post(
        "/v1/uploads",
        files={"file": ("layer.csv", b"pcode,value\nHN0101,3.5\nHN0102,4.5\n", "text/csv")},
        data={"indicator": code, "theme": "migration"},
        headers=KEY,
    )
    assert r.status_code == 201, r.text


def test_delete_an_uploaded_layer(client: Any) -> None:
    c, engine = client
    before = _state(engine)
    _upload(c, "gone_user")
    assert "gone_user" in {i["code"] for i in c.get("/v1/indicators").json()["items"]}
    assert c.get("/v1/priorities?top=1").status_code == 200

    assert c.delete("/v1/uploads/gone_user").status_code == 401
    r = c.delete("/v1/uploads/gone_user", headers=KEY)
    assert r.status_code == 200, r.text
    gone = r.json()["deleted"]
    assert gone["indicator"] == "gone_user" and gone["source_id"] == "user-gone_user" and gone["values"] == 2

    after = _state(engine)
    assert after[:3] == before[:3]  # values, indicator and source all gone
    assert after[3] == gone["epoch"] > before[3]
    assert "gone_user" not in {i["code"] for i in c.get("/v1/indicators").json()["items"]}
    assert "user-gone_user" not in {s["id"] for s in c.get("/v1/sources").json()["items"]}
    assert c.get("/v1/indicators/gone_user/values").status_code == 404
    # the priorities are scored again, on the new epoch
    assert c.get("/v1/priorities?top=1").status_code == 200
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT data_version FROM score_runs ORDER BY id")).scalars().all()
    assert versions[-1].startswith(f"e{gone['epoch']}/") and not versions[-2].startswith(f"e{gone['epoch']}/")

    again = c.delete("/v1/uploads/gone_user", headers=KEY)
    assert again.status_code == 404 and "No user layer 'gone_user'" in again.json()["description"]


def test_bundled_indicators_cannot_be_deleted(client: Any) -> None:
    c, engine = client
    before = _state(engine)
    r = c.delete("/v1/uploads/gini", headers=KEY)
    assert r.status_code == 400
    assert "belongs to source 'gtm-a2sit'" in r.json()["description"]
    assert _state(engine) == before


def test_cli_layer_delete(client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app import cli
    from app.settings import get_settings

    c, engine = client
    _upload(c, "cli_gone")
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        ok = CliRunner().invoke(cli.app, ["layer", "delete", "cli_gone"])
        assert ok.exit_code == 0, ok.output
        assert "user layer cli_gone deleted: 2 values" in ok.output
        refused = CliRunner().invoke(cli.app, ["layer", "delete", "gini"])
        assert refused.exit_code != 0 and "belongs to source 'gtm-a2sit'" in refused.output
    finally:
        get_settings.cache_clear()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM indicators WHERE code = 'cli_gone'")).scalar() == 0
