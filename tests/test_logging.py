"""Logging as the README documents it: RAICES_LOG_FORMAT=json gives one JSON object per line for the
app's logs and uvicorn's (access log included), plain text otherwise; set up by `create_app` and by
`raices serve`."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.main import create_app
from app.settings import Settings


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _access_lines(err: str) -> list[str]:
    return [line for line in _lines(err) if "/v1/countries" in line]


def test_json_logs_through_create_app(
    settings: Settings, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings.model_copy(update={"log_format": "json"}), engine)
    capsys.readouterr()
    with TestClient(app) as c:
        c.get("/v1/countries", headers={"X-Request-ID": "logtest1"})
    err = capsys.readouterr().err
    records = [json.loads(line) for line in _lines(err)]  # every line is a JSON object
    access = [r for r in records if r["logger"] == "app.access"]
    assert access, err
    assert access[-1]["request_id"] == "logtest1" and access[-1]["path"] == "/v1/countries"
    assert access[-1]["status"] == 200 and access[-1]["level"] == "INFO"


def test_text_logs_by_default(settings: Settings, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    assert settings.log_format == "text"
    app = create_app(settings, engine)
    capsys.readouterr()
    with TestClient(app) as c:
        c.get("/v1/countries")
    lines = _access_lines(capsys.readouterr().err)
    assert lines and " INFO app.access GET /v1/countries 200 " in lines[-1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[-1])


def test_one_line_per_record_however_many_apps(
    settings: Settings, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("json", "text", "json", "text"):
        create_app(settings.model_copy(update={"log_format": fmt}), engine)
    capsys.readouterr()
    logging.getLogger("app.test").warning("once-only-7f3a")
    assert capsys.readouterr().err.count("once-only-7f3a") == 1


def test_log_level_is_applied(settings: Settings, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    create_app(settings.model_copy(update={"log_level": "WARNING"}), engine)
    try:
        logging.getLogger("app.test").info("hidden")
        logging.getLogger("app.test").warning("shown")
        err = capsys.readouterr().err
        assert "shown" in err and "hidden" not in err
    finally:
        create_app(settings, engine)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(settings: Settings, loaded_url: str, log_format: str) -> tuple[str, str]:
    """Start `raices serve` as a user would, make one request, stop it; its stdout and stderr."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": loaded_url,
        "RAICES_DATA_CACHE": str(settings.data_cache),
        "RAICES_LOG_FORMAT": log_format,
        "RAICES_LOG_LEVEL": "INFO",
        "RAICES_RATE_LIMIT_PER_MINUTE": "0",
    }
    raices = Path(sys.executable).with_name("raices")
    cmd = [str(raices)] if raices.exists() else [sys.executable, "-m", "app.cli"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v1/countries", timeout=5).status_code
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert status == 200, proc.poll()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    return out, err


def test_serve_writes_json_logs_with_uvicorn_access_log(settings: Settings, loaded_url: str) -> None:
    out, err = _serve(settings, loaded_url, "json")
    records = [json.loads(line) for line in _lines(err)]  # every line, uvicorn's included, is JSON
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "uvicorn.access", "app.access"} <= loggers, err
    access = [r for r in records if r["logger"] == "uvicorn.access" and r["path"] == "/v1/countries"]
    assert access and access[0]["status"] == 200 and access[0]["method"] == "GET", err
    assert any("Started server process" in r["message"] for r in records)
    assert out == ""  # uvicorn's access log no longer goes to stdout: one stream, one format


def test_serve_writes_text_logs_by_default(settings: Settings, loaded_url: str) -> None:
    _, err = _serve(settings, loaded_url, "text")
    access = [line for line in _lines(err) if " uvicorn.access " in line and "/v1/countries" in line]
    assert access and " INFO uvicorn.access " in access[0] and '"GET /v1/countries HTTP/1.1" 200' in access[0]
    assert not any(line.startswith("{") for line in _lines(err))
