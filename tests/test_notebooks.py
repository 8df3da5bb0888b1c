"""The analysts' notebooks run top to bottom against the test database, and are committed without outputs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import rasterio
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from app import notebook
from app.settings import PROJECT_ROOT, Settings, get_settings

NOTEBOOKS = PROJECT_ROOT / "notebooks"
EXPECTED = [
    "01_priorities_overview.ipynb",
    "02_custom_weights_and_sensitivity.ipynb",
    "03_hurricane_exposure.ipynb",
    "04_el_salvador_2024_reform.ipynb",
    "05_validation.ipynb",
    "06_monitoring.ipynb",
]
# notebooks that write (a user layer, a baseline): each runs on its own copy of the loaded database
WRITES = {"06_monitoring.ipynb"}
TIMEOUT_S = 120  # per cell (nbclient) and per notebook (below)


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.fixture(scope="module")
def kernel_env(
    loaded_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The kernel's environment: the test database and folders, a headless backend, and a `python3`
    kernelspec that starts this very interpreter (the project's venv), found before any user kernelspec."""
    specs = tmp_path_factory.mktemp("jupyter")
    kernel = specs / "kernels" / "python3"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (raices .venv)",
                "language": "python",
            }
        )
    )
    return {
        "DATABASE_URL": loaded_url,
        "RAICES_DATA_CACHE": str(settings.data_cache),
        "RAICES_RASTER_DIR": str(settings.raster_dir),
        "RAICES_ALLOW_DOWNLOAD": "false",
        "MPLBACKEND": "Agg",
        "JUPYTER_PATH": str(specs),
    }


def test_the_six_notebooks_are_there() -> None:
    assert [p.name for p in notebooks()] == EXPECTED


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_outputs_are_stripped(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {cell.id} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {cell.id} has an execution count"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_runs(
    path: Path, kernel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    for name, value in kernel_env.items():
        monkeypatch.setenv(name, value)  # the kernel process inherits this environment
    if path.name in WRITES:
        engine, _ = request.getfixturevalue("fresh")
        monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}")
    elapsed = time.perf_counter() - started
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")
    print(f"{path.name}: {elapsed:.1f} s")
    assert elapsed < TIMEOUT_S, f"{path.name} took {elapsed:.0f} s"


def test_wind_raster_is_modelled_when_missing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty raster folder gets the loader's raster again, cell for cell."""
    monkeypatch.setenv("RAICES_DATA_CACHE", str(settings.data_cache))
    monkeypatch.setenv("RAICES_RASTER_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        path = notebook.wind_raster()
    finally:
        get_settings.cache_clear()
    assert path.parent == tmp_path
    with rasterio.open(path) as made, rasterio.open(settings.raster_dir / path.name) as stored:
        assert made.crs == stored.crs and made.transform == stored.transform
        assert np.array_equal(made.read(1), stored.read(1))
