"""The source manifest (`geodata/sources.toml`) and resolution of its files.

A file is taken from the local cache, else the mirror folder, else its upstream URL (downloaded into
the cache). Every file is checked against the manifest's sha256 before use.
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.errors import ChecksumMismatch, SourceError
from app.settings import Settings


@dataclass(frozen=True)
class SourceFile:
    """One file of a source, as the manifest names it."""

    name: str
    sha256: str
    url: str = ""
    format: str = ""
    role: str = ""
    layer: str | None = None
    encoding: str | None = None


@dataclass(frozen=True)
class Source:
    """One source of the manifest: who published it, under which licence, and its files."""

    id: str
    kind: str
    title: str
    publisher: str
    licence: str
    citation: str
    mirror_dir: str
    homepage: str = ""
    notes: str = ""
    files: tuple[SourceFile, ...] = field(default_factory=tuple)

    def file(self, role_or_name: str) -> SourceFile:
        """The file with this role or name (for a shapefile's role, its .shp)."""
        matches = [f for f in self.files if role_or_name in (f.role, f.name)]
        matches.sort(key=lambda f: not f.name.lower().endswith(".shp"))
        if not matches:
            raise SourceError(f"Source '{self.id}' has no file '{role_or_name}' in the manifest.")
        return matches[0]

    def first(self, fmt: str) -> SourceFile:
        """The first file of a format (the table of a reference source)."""
        for f in self.files:
            if f.format == fmt:
                return f
        raise SourceError(f"Source '{self.id}' has no {fmt} file in the manifest.")


_FILE_FIELDS = {f for f in SourceFile.__dataclass_fields__}
_SOURCE_FIELDS = {f for f in Source.__dataclass_fields__}


def load_manifest(path: Path) -> dict[str, Source]:
    """Parse the manifest into sources keyed by id, in manifest order."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SourceError(f"Source manifest not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"Source manifest {path} is not valid TOML: {exc}") from exc
    out: dict[str, Source] = {}
    for raw in data.get("source", []):
        files = tuple(
            SourceFile(**{k: v for k, v in f.items() if k in _FILE_FIELDS}) for f in raw.get("files", [])
        )
        fields = {k: v for k, v in raw.items() if k in _SOURCE_FIELDS and k != "files"}
        out[raw["id"]] = Source(files=files, **fields)
    return out


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Resolver:
    """Finds the bytes of each source file: cache, then mirror, then upstream URL."""

    def __init__(self, settings: Settings) -> None:
        self.cache = settings.data_cache
        self.mirror = settings.data_mirror
        self.allow_download = settings.allow_download
        self.timeout = settings.download_timeout

    def resolve(self, source: Source) -> dict[str, Path]:
        """Paths of all the source's files, in one folder (so shapefile sidecars sit together)."""
        paths = {f.name: self._resolve_file(source, f) for f in source.files}
        folders = {p.parent for p in paths.values()}
        if len(folders) > 1:
            target = self.cache / source.id
            target.mkdir(parents=True, exist_ok=True)
            for name, p in list(paths.items()):
                if p.parent != target:
                    shutil.copyfile(p, target / name)
                    paths[name] = target / name
        return paths

    def _resolve_file(self, source: Source, f: SourceFile) -> Path:
        cached = self.cache / source.id / f.name
        if cached.is_file() and sha256_of(cached) == f.sha256:
            return cached
        if self.mirror is not None:
            mirrored = self.mirror / source.mirror_dir / f.name
            if mirrored.is_file():
                actual = sha256_of(mirrored)
                if actual != f.sha256:
                    raise ChecksumMismatch(
                        f"Source '{source.id}', file '{f.name}': checksum mismatch in the mirror "
                        f"({mirrored}): expected sha256 {f.sha256[:12]}…, found {actual[:12]}…. "
                        "The file differs from the one the manifest pins; restore it or update the manifest."
                    )
                return mirrored
        return self._download(source, f, cached)

    def _download(self, source: Source, f: SourceFile, target: Path) -> Path:
        where = f"mirror folder {self.mirror}" if self.mirror else "no mirror folder (RAICES_DATA_MIRROR)"
        if not f.url:
            raise SourceError(
                f"Source '{source.id}', file '{f.name}' is missing: not in the cache, not in the {where}, "
                "and it has no upstream URL."
            )
        if not self.allow_download:
            raise SourceError(
                f"Source '{source.id}', file '{f.name}' is missing from the cache and the {where}; "
                "downloads are disabled (RAICES_ALLOW_DOWNLOAD=false)."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".part")
        try:
            with httpx.stream("GET", f.url, timeout=self.timeout, follow_redirects=True) as response:
                response.raise_for_status()
                with partial.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise SourceError(
                f"Source '{source.id}', file '{f.name}' is missing from the cache and the {where}, "
                f"and its upstream URL {f.url} could not be fetched ({type(exc).__name__})."
            ) from exc
        actual = sha256_of(partial)
        if actual != f.sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"Source '{source.id}', file '{f.name}': the download from {f.url} has sha256 "
                f"{actual[:12]}…, the manifest pins {f.sha256[:12]}…; upstream has changed."
            )
        partial.replace(target)
        return target
