"""The planners' map page at /map: our own HTML, JS and CSS from app/web/, MapLibre from node_modules.

Nothing is loaded from the internet: MapLibre GL JS is installed from the npm registry by `make run`
(`npm install`) and served from `<project>/node_modules/maplibre-gl/dist/`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from app.errors import NotFound, RaicesError
from app.settings import PROJECT_ROOT

router = APIRouter(tags=["map"], include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
VENDOR_DIR = PROJECT_ROOT / "node_modules" / "maplibre-gl" / "dist"
VENDOR_FILES = frozenset({"maplibre-gl.js", "maplibre-gl.css", "maplibre-gl.js.map"})
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
}
# our files change with the code: revalidate every time (cheap, FileResponse sends an ETag)
OWN_CACHE = "no-cache"
VENDOR_CACHE = "public, max-age=86400"


class MapAssetsMissing(RaicesError):
    """MapLibre GL JS is not installed in node_modules."""

    status_code = 503
    code = "ServiceUnavailable"


def _vendor_dir() -> Path:
    """The MapLibre dist folder, or MapAssetsMissing saying how to install it."""
    if not (VENDOR_DIR / "maplibre-gl.js").is_file():
        raise MapAssetsMissing(
            "The map page needs MapLibre GL JS, which is not installed: run `npm install` in the project "
            "folder (`make run` does it)."
        )
    return VENDOR_DIR


def _file(folder: Path, name: str, allowed: frozenset[str], cache: str) -> FileResponse:
    # only names we list: no path from the client ever reaches the file system
    if name not in allowed:
        raise NotFound(f"No map asset '{name}'.")
    media = MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")
    return FileResponse(folder / name, media_type=media, headers={"Cache-Control": cache})


def _own_files() -> frozenset[str]:
    return frozenset(p.name for p in WEB_DIR.iterdir() if p.suffix in (".js", ".css"))


@router.get("/map", response_class=HTMLResponse)
def map_page() -> HTMLResponse:
    """The map page (503 when MapLibre is not installed)."""
    _vendor_dir()
    html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": OWN_CACHE})


@router.get("/map/static/{name}")
def map_static(name: str) -> FileResponse:
    """The page's own scripts and styles, from app/web/."""
    return _file(WEB_DIR, name, _own_files(), OWN_CACHE)


@router.get("/map/vendor/{name}")
def map_vendor(name: str) -> FileResponse:
    """MapLibre GL JS and its stylesheet, from node_modules."""
    return _file(_vendor_dir(), name, VENDOR_FILES, VENDOR_CACHE)
