"""Bad inputs and failed loads: a clear error each time, and the database unchanged afterwards."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.errors import ChecksumMismatch, DataError, SourceError
from app.ingest import boundaries
from app.ingest.common import read_vector
from app.ingest.run import load_source
from app.settings import Settings
from app.sources import Source, SourceFile, load_manifest, sha256_of
from tests.conftest import snapshot

Fresh = tuple[Engine, Settings]


def _copy_source(settings: Settings, source_id: str, target: Path, mutate: dict[str, bytes | None]) -> Source:
    """A copy of a manifest source in a private mirror, with some files replaced (None: removed)."""
    source = load_manifest(settings.manifest)[source_id]
    assert settings.data_mirror is not None
    folder = target / source.mirror_dir
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for f in source.files:
        dest = folder / f.name
        if f.name in mutate:
            content = mutate[f.name]
            if content is None:
                continue
            dest.write_bytes(content)
        else:
            shutil.copyfile(settings.data_mirror / source.mirror_dir / f.name, dest)
        files.append(replace(f, sha256=sha256_of(dest), url=""))
    return replace(source, files=tuple(files))


def _private(
    settings: Settings, tmp_path: Path, source_id: str, mutate: dict[str, bytes | None]
) -> tuple[Settings, dict[str, Source]]:
    """Settings whose mirror holds all real sources, and one of them altered."""
    sources = load_manifest(settings.manifest)
    mirror = tmp_path / "mirror"
    for sid in sources:
        sources[sid] = _copy_source(settings, sid, mirror, mutate if sid == source_id else {})
    private = settings.model_copy(update={"data_mirror": mirror, "data_cache": tmp_path / "cache"})
    return private, sources


def test_malformed_geojson(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    before = snapshot(engine)
    s, sources = _private(
        settings, tmp_path, "hnd-a2sit", {"HND.geojson": b'{"type": "FeatureCollection", "feat'}
    )
    with pytest.raises(DataError, match=r"Source 'hnd-a2sit', file 'HND\.geojson' cannot be read"):
        load_source(engine, s, "hnd-a2sit", sources=sources, force=True)
    assert snapshot(engine) == before


def test_shapefile_without_prj(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    before = snapshot(engine)
    s, sources = _private(settings, tmp_path, "slv-codab-2021", {"slv_admbnda_adm2_gadm_20210204.prj": None})
    with pytest.raises(DataError, match=r"no coordinate reference system.*\.prj"):
        load_source(engine, s, "slv-codab-2021", sources=sources, force=True)
    assert snapshot(engine) == before


def test_read_vector_refuses_a_file_with_no_crs(tmp_path: Path, settings: Settings) -> None:
    assert settings.data_mirror is not None
    src = settings.data_mirror / "boundaries" / "slv-codab-2021"
    for ext in ("shp", "shx", "dbf"):
        shutil.copyfile(src / f"slv_admbnda_adm1_gadm_20210204.{ext}", tmp_path / f"adm1.{ext}")
    with pytest.raises(DataError, match=r"is its \.prj missing"):
        read_vector(tmp_path / "adm1.shp", source_id="user")


def test_checksum_mismatch_leaves_database_unchanged(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    before = snapshot(engine)
    s, sources = _private(settings, tmp_path, "gtm-minfin", {})
    gtm = sources["gtm-minfin"]
    sources["gtm-minfin"] = replace(gtm, files=(replace(gtm.files[0], sha256="f" * 64), *gtm.files[1:]))
    with pytest.raises(ChecksumMismatch, match=r"Source 'gtm-minfin', file 'munis\.json'"):
        load_source(engine, s, "gtm-minfin", sources=sources, force=True)
    assert snapshot(engine) == before


def test_unknown_source_id(fresh: Fresh) -> None:
    engine, settings = fresh
    with pytest.raises(SourceError, match=r"Unknown source 'nope'; loadable sources: gtm-minfin"):
        load_source(engine, settings, "nope")


def test_validation_failure_stores_nothing(fresh: Fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file missing a municipio fails the count check against INE: nothing is written."""
    engine, settings = fresh
    before = snapshot(engine)
    real_clean = boundaries.clean_gtm

    def drop_one(munis, deptos):  # type: ignore[no-untyped-def]
        return real_clean(munis[munis["id"] != 101], deptos)

    monkeypatch.setattr(boundaries, "clean_gtm", drop_one)
    with pytest.raises(DataError, match="department GT01 has 16 municipios, the reference lists 17") as err:
        load_source(engine, settings, "gtm-minfin", force=True)
    assert any("missing ['0101']" in e for e in err.value.errors)
    assert snapshot(engine) == before


def test_failure_half_way_rolls_back(fresh: Fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crosswalk that fails after the units were upserted rolls the whole load back."""
    engine, settings = fresh
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE admin_units SET name = 'Old name' WHERE pcode = 'SV0101'")
    before = snapshot(engine)
    real = boundaries.prepare_slv

    def broken(*args):  # type: ignore[no-untyped-def]
        prepared = real(*args)
        prepared.crosswalk.loc[0, "to_pcode"] = "SVM9999"  # names a unit that does not exist
        return prepared

    monkeypatch.setitem(boundaries.BOUNDARY_LOADERS, "slv-codab-2021", broken)
    with pytest.raises(DataError, match="crosswalk rows name units that were not stored"):
        load_source(engine, settings, "slv-codab-2021", force=True)
    assert snapshot(engine) == before


def test_loading_twice_changes_nothing(fresh: Fresh) -> None:
    engine, settings = fresh
    before = snapshot(engine)
    reports = [load_source(engine, settings, sid) for sid in ("gtm-minfin", "slv-codab-2021", "hnd-a2sit")]
    assert [r.status for r in reports] == ["unchanged"] * 3
    assert snapshot(engine) == before
    forced = load_source(engine, settings, "gtm-minfin", force=True)
    assert forced.status == "loaded"
    after = snapshot(engine)
    assert after["units"] == before["units"] and after["crosswalk"] == before["crosswalk"]


def test_load_into_empty_database(empty: Fresh) -> None:
    engine, settings = empty
    report = load_source(engine, settings, "slv-2024-reform")  # loads with slv-codab-2021
    assert report.status == "loaded"
    assert report.sets == {
        "slv-2021-distritos": {"departments": 14, "municipalities": 262},
        "slv-2024-municipios": {"departments": 14, "municipalities": 44},
    }
    assert report.crosswalk_rows == 262


def test_cli_unknown_source_is_a_message_not_a_trace(fresh: Fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import cli
    from app.settings import get_settings

    engine, _settings = fresh
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["load", "nope"])
        assert result.exit_code == 2
        assert "Unknown source 'nope'" in result.output
        assert "Traceback" not in result.output
        url = CliRunner().invoke(cli.app, ["db", "url"])
        assert url.exit_code == 0 and url.output.strip().startswith(
            "postgresql+psycopg://postgres@127.0.0.1:"
        )
    finally:
        get_settings.cache_clear()


def test_source_file_dataclass_ignores_unknown_manifest_fields(tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[[source]]\nid = "x"\nkind = "reference"\ntitle = "t"\npublisher = "p"\n'
        'licence = "l"\ncitation = "c"\nmirror_dir = "x"\nfuture_field = 1\n'
        '[[source.files]]\nname = "a.csv"\nsha256 = "00"\nderived = "note"\n'
    )
    from app.sources import load_manifest as lm

    src = lm(manifest)["x"]
    assert src.files == (SourceFile(name="a.csv", sha256="00"),)
