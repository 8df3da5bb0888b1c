"""The manifest and file resolution: cache, then mirror, then upstream URL, always checksummed."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.errors import ChecksumMismatch, SourceError
from app.settings import Settings
from app.sources import Resolver, Source, SourceFile, load_manifest, sha256_of

BOUNDARY_IDS = {"gtm-minfin", "slv-codab-2021", "slv-2024-reform", "hnd-a2sit"}
REFERENCE_IDS = {"ref-ocha-pcodes", "ref-gtm-ine", "ref-slv-crosswalk"}


def test_manifest_lists_every_mirrored_file_with_its_checksum(settings: Settings) -> None:
    manifest = load_manifest(settings.manifest)
    assert set(manifest) >= BOUNDARY_IDS | REFERENCE_IDS
    assert settings.data_mirror is not None
    listed = set()
    for source in manifest.values():
        assert source.title and source.publisher and source.licence and source.citation, source.id
        for f in source.files:
            path = settings.data_mirror / source.mirror_dir / f.name
            assert sha256_of(path) == f.sha256, f"{source.id}/{f.name}"
            assert f.url == "" or f.url.startswith("https://"), f.name
            listed.add(path.resolve())
    on_disk = {p.resolve() for p in settings.data_mirror.rglob("*") if p.is_file() and p.name != "README.md"}
    assert on_disk == listed


def _source(tmp: Path, content: bytes, *, sha: str | None = None, url: str = "") -> Source:
    return Source(
        id="tiny",
        kind="reference",
        title="t",
        publisher="p",
        licence="l",
        citation="c",
        mirror_dir="tiny",
        files=(
            SourceFile(
                name="a.csv", sha256=sha or hashlib.sha256(content).hexdigest(), url=url, format="csv"
            ),
        ),
    )


def _settings(tmp: Path, **kw: object) -> Settings:
    return Settings(data_mirror=tmp / "mirror", data_cache=tmp / "cache", **kw)  # type: ignore[arg-type]


def test_mirror_then_cache(tmp_path: Path) -> None:
    (tmp_path / "mirror" / "tiny").mkdir(parents=True)
    (tmp_path / "mirror" / "tiny" / "a.csv").write_bytes(b"x,y\n1,2\n")
    src = _source(tmp_path, b"x,y\n1,2\n")
    assert Resolver(_settings(tmp_path)).resolve(src)["a.csv"] == tmp_path / "mirror" / "tiny" / "a.csv"
    # a valid cached copy wins over the mirror
    (tmp_path / "cache" / "tiny").mkdir(parents=True)
    (tmp_path / "cache" / "tiny" / "a.csv").write_bytes(b"x,y\n1,2\n")
    assert Resolver(_settings(tmp_path)).resolve(src)["a.csv"] == tmp_path / "cache" / "tiny" / "a.csv"


def test_checksum_mismatch_names_source_and_file(tmp_path: Path) -> None:
    (tmp_path / "mirror" / "tiny").mkdir(parents=True)
    (tmp_path / "mirror" / "tiny" / "a.csv").write_bytes(b"tampered\n")
    with pytest.raises(ChecksumMismatch, match=r"Source 'tiny', file 'a\.csv': checksum mismatch"):
        Resolver(_settings(tmp_path)).resolve(_source(tmp_path, b"original\n"))


def test_missing_file_without_url(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"Source 'tiny', file 'a\.csv' is missing"):
        Resolver(_settings(tmp_path)).resolve(_source(tmp_path, b"z"))


def test_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    src = _source(tmp_path, b"z", url="http://127.0.0.1:9/a.csv")  # nothing listens on port 9
    with pytest.raises(SourceError, match=r"Source 'tiny', file 'a\.csv'.*could not be fetched"):
        Resolver(_settings(tmp_path, allow_download=True, download_timeout=2)).resolve(src)


def test_downloads_disabled(tmp_path: Path) -> None:
    src = _source(tmp_path, b"z", url="http://127.0.0.1:9/a.csv")
    with pytest.raises(SourceError, match="downloads are disabled"):
        Resolver(_settings(tmp_path, allow_download=False)).resolve(src)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.csv").write_bytes(b"x,y\n3,4\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_into_cache_and_verify(tmp_path: Path, http_server: str) -> None:
    src = _source(tmp_path, b"x,y\n3,4\n", url=f"{http_server}/a.csv")
    path = Resolver(_settings(tmp_path, allow_download=True)).resolve(src)["a.csv"]
    assert path == tmp_path / "cache" / "tiny" / "a.csv"
    assert path.read_bytes() == b"x,y\n3,4\n"
    bad = replace(src, files=(replace(src.files[0], sha256="0" * 64),))
    (tmp_path / "cache" / "tiny" / "a.csv").unlink()
    with pytest.raises(ChecksumMismatch, match="upstream has changed"):
        Resolver(_settings(tmp_path, allow_download=True)).resolve(bad)
    assert not (tmp_path / "cache" / "tiny" / "a.csv").exists()
