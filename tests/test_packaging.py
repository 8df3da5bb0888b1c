"""The container packaging: docker-compose.yml validated by a real Compose implementation, the Dockerfile
and .dockerignore checked statically (no Docker engine is needed, and none is used: nothing is built).

Compose: `docker compose` (v2) when the Docker CLI has the plugin, else Debian's `docker-compose` (v1),
installed with apt-get when missing and running as root (as in CI). Both print the resolved file with
`config`; the assertions read that output, normalising the few spots where v1 and v2 differ.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"

# variables the compose file reads; the runs below start without them (and without .env) to be repeatable
COMPOSE_VARIABLES = (
    "POSTGRES_PASSWORD",
    "RAICES_API_KEYS",
    "RAICES_CORS_ORIGINS",
    "RAICES_WORKERS",
    "RAICES_MIRROR",
)


# --- Compose --------------------------------------------------------------------------------------------


def _install_docker_compose() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "No Compose implementation: install the Docker CLI's compose plugin or Debian's docker-compose "
            "(apt-get install docker-compose); this test installs it itself only when running as root."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-compose"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"apt-get install docker-compose failed:\n{done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def compose() -> list[str]:
    """The command of a Compose implementation: `docker compose` or `docker-compose`."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose") is None:
        _install_docker_compose()
    path = shutil.which("docker-compose")
    assert path is not None, "docker-compose is still missing after apt-get install"
    return [path]


def run_compose(compose: list[str], tmp_path: Path, *args: str, **variables: str) -> str:
    """`compose --env-file <empty> -f docker-compose.yml ARGS` with only `variables` set; its stdout."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES} | variables
    done = subprocess.run(
        [
            *compose,
            "--env-file",
            str(empty),
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE_FILE),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{' '.join(compose)} {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def resolved(compose: list[str], tmp_path: Path, **variables: str) -> dict[str, Any]:
    config = yaml.safe_load(run_compose(compose, tmp_path, "config", **variables))
    assert isinstance(config, dict)
    return config


def volumes_of(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Target → {source, read_only} from v1's short strings or v2's long form."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            source, target, read_only = v.get("source"), v["target"], bool(v.get("read_only"))
        out[target] = {"source": source, "read_only": read_only}
    return out


def ports_of(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(published, target) pairs, from either form."""
    out = set()
    for p in service.get("ports", []):
        if isinstance(p, str):
            *_, published, target = p.split(":")
            out.add((int(published), int(target.split("/")[0])))
        else:
            out.add((int(p["published"]), int(p["target"])))
    return out


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_compose_file_is_valid(compose: list[str], tmp_path: Path) -> None:
    assert run_compose(compose, tmp_path, "config", "-q").strip() == ""


def test_compose_services(compose: list[str], tmp_path: Path) -> None:
    config = resolved(compose, tmp_path)
    services = config["services"]
    assert set(services) == {"db", "app"}

    db = services["db"]
    assert db["image"] == "postgis/postgis:15-3.4"
    test = db["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    data = volumes_of(db)["/var/lib/postgresql/data"]
    assert data["source"] in config["volumes"], "the database must live in a named volume"
    assert environment_of(db)["POSTGRES_DB"] == "raices"

    app = services["app"]
    assert Path(app["build"]["context"]).resolve() == ROOT
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert ports_of(app) == {(8000, 8000)}
    assert "ports" not in db, "the database is reached through the compose network only"
    env = environment_of(app)
    assert re.fullmatch(r"postgresql(\+psycopg)?://raices:[^@]+@db:5432/raices", env["DATABASE_URL"])
    assert env["RAICES_DATA_MIRROR"] == "/data/geodata"
    mirror = volumes_of(app)["/data/geodata"]
    assert mirror["read_only"]
    assert mirror["source"] in config["volumes"], (
        "without RAICES_MIRROR the mirror is an (empty) named volume"
    )


def test_compose_mounts_a_host_mirror_read_only(compose: list[str], tmp_path: Path) -> None:
    host = tmp_path / "geodata"
    host.mkdir()
    config = resolved(compose, tmp_path, RAICES_MIRROR=str(host), POSTGRES_PASSWORD="s3cret")
    app = config["services"]["app"]
    assert volumes_of(app)["/data/geodata"] == {"source": str(host), "read_only": True}
    assert environment_of(app)["DATABASE_URL"] == "postgresql+psycopg://raices:s3cret@db:5432/raices"
    assert environment_of(config["services"]["db"])["POSTGRES_PASSWORD"] == "s3cret"


# --- Dockerfile -----------------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments and heredoc bodies skipped
    (a heredoc's body is kept as the end of its instruction's arguments)."""
    out: list[tuple[str, str]] = []
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\"):
            nxt = next(lines).strip()
            line = line[:-1].rstrip() + (" " + nxt if nxt and not nxt.startswith("#") else "")
        keyword, _, args = line.partition(" ")
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", args)
        if heredoc:
            body = []
            for body_line in lines:
                if body_line.strip() == heredoc.group(1):
                    break
                body.append(body_line)
            args += "\n" + "\n".join(body)
        out.append((keyword.upper(), args.strip()))
    return out


def stages(ins: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (the ones before the first FROM, i.e. ARGs, dropped)."""
    out: list[list[tuple[str, str]]] = []
    for keyword, args in ins:
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((keyword, args))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def test_dockerfile_is_multi_stage(dockerfile: list[tuple[str, str]]) -> None:
    froms = [args for keyword, args in dockerfile if keyword == "FROM"]
    assert len(froms) >= 2
    final = froms[-1].split()[0]
    defaults = dict(a.split("=", 1) for k, a in dockerfile if k == "ARG" and "=" in a)
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), final)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), f"runtime image {image}: a slim Python 3.11"
    runtime = stages(dockerfile)[-1]
    runs = " ".join(a for k, a in runtime if k == "RUN")
    assert not re.search(r"build-essential|gcc|libpq-dev", runs), "no build tools in the runtime stage"
    assert any(k == "COPY" and "--from=" in a and "/opt/venv" in a for k, a in runtime)


def test_dockerfile_runs_as_a_user_that_is_not_root(dockerfile: list[tuple[str, str]]) -> None:
    runtime = stages(dockerfile)[-1]
    keywords = [k for k, _ in runtime]
    users = [(i, a) for i, (k, a) in enumerate(runtime) if k == "USER"]
    assert users, "no USER in the runtime stage"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0"), f"USER {user}"
    starts = [i for i, k in enumerate(keywords) if k in ("ENTRYPOINT", "CMD")]
    assert starts and all(index < i for i in starts), "USER must come before ENTRYPOINT and CMD"


def test_dockerfile_healthcheck_and_start_sequence(dockerfile: list[tuple[str, str]]) -> None:
    runtime = stages(dockerfile)[-1]
    checks = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0]
    assert any(k == "EXPOSE" and "8000" in a.split() for k, a in runtime)
    assert any(k == "ENTRYPOINT" for k, _ in runtime)
    # the entrypoint script (a heredoc in the Dockerfile): migrate, load what is missing, score, serve
    script = "\n".join(a for k, a in runtime if k == "COPY" and "raices-entrypoint" in a)
    steps = ["raices db upgrade", "raices load all --missing", "raices score", "raices serve"]
    positions = [script.find(s) for s in steps]
    assert -1 not in positions and positions == sorted(positions), positions
    assert re.search(r"raices serve --host \"?\$\{?RAICES_HOST:-0\.0\.0\.0\}?\"? --port", script)
    assert "set -e" in script


def test_dockerfile_bakes_in_no_data(dockerfile: list[tuple[str, str]]) -> None:
    for keyword, args in dockerfile:
        if keyword in ("COPY", "ADD"):
            words = args.split("\n")[0].split()[:-1]  # the last word is the destination
            sources = [a for a in words if not a.startswith(("--", "<<"))]
            for src in sources:
                assert not src.startswith(".."), f"{keyword} {args}: outside the build context"
                assert "shared" not in src and ".data" not in src, f"{keyword} {args}: data baked in"
        assert "../shared" not in args
    # MapLibre from an npm stage, for /map
    assert any(k == "RUN" and "npm ci" in a for k, a in dockerfile)
    assert any(k == "COPY" and "--from=" in a and "node_modules" in a for k, a in dockerfile)


def test_dockerignore_keeps_environments_data_and_secrets_out() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".data", "node_modules", ".env", ".git", ".pytest_cache", "**/__pycache__"):
        assert needed in patterns, f".dockerignore lacks {needed}"
    for kept in ("app", "migrations", "geodata", "pyproject.toml", "package.json", "package-lock.json"):
        assert kept not in patterns, f".dockerignore drops {kept}, which the image needs"


def test_ci_runs_lint_then_the_tests_from_a_fresh_clone() -> None:
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert steps.index("make lint") < steps.index("make test")
    # `make lint` must set up its own environment: it depends on the install stamp, as `make test` does
    targets = dict(re.findall(r"^([a-z]+):([^#\n]*)", (ROOT / "Makefile").read_text(), flags=re.M))
    assert "$(STAMP)" in targets["lint"].split() and "$(STAMP)" in targets["test"].split()
