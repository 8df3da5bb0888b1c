"""The boundary loaders on the real mirror files, and the pinned defects."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import Engine, text

from app.ingest.boundaries import restore_department_accent
from app.settings import Settings
from app.sources import Resolver, load_manifest


def _scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _reference(settings: Settings, source_id: str) -> pd.DataFrame:
    source = load_manifest(settings.manifest)[source_id]
    path = Resolver(settings).resolve(source)[source.first("csv").name]
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.mark.parametrize(
    ("set_id", "departments", "municipalities"),
    [
        ("gtm-municipios", 22, 340),
        ("slv-2021-distritos", 14, 262),
        ("slv-2024-municipios", 14, 44),
        ("hnd-municipios", 18, 298),
    ],
)
def test_counts_per_set(engine: Engine, set_id: str, departments: int, municipalities: int) -> None:
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                text("SELECT level, count(*) FROM admin_units WHERE boundary_set_id = :s GROUP BY level"),
                {"s": set_id},
            ).all()
        )
    assert counts == {1: departments, 2: municipalities}


def test_gtm_counts_per_department_match_ine(engine: Engine, settings: Settings) -> None:
    ine = _reference(settings, "ref-gtm-ine")
    expected = ("GT" + ine["codigo_depto"].str.zfill(2)).value_counts().sort_index().to_dict()
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                text(
                    "SELECT parent_pcode, count(*) FROM admin_units WHERE boundary_set_id = 'gtm-municipios' "
                    "AND level = 2 GROUP BY 1"
                )
            ).all()
        )
    assert found == expected
    assert found["GT01"] == 17  # Guatemala department


def test_hnd_counts_per_department_match_ocha(engine: Engine, settings: Settings) -> None:
    ocha = _reference(settings, "ref-ocha-pcodes")
    hnd = ocha[(ocha["Location"] == "HND") & (ocha["Admin Level"] == "2")]
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                text(
                    "SELECT parent_pcode, count(*) FROM admin_units WHERE boundary_set_id = 'hnd-municipios' "
                    "AND level = 2 GROUP BY 1"
                )
            ).all()
        )
        pcodes = set(
            conn.execute(
                text("SELECT pcode FROM admin_units WHERE boundary_set_id = 'hnd-municipios' AND level = 2")
            ).scalars()
        )
    assert found == hnd["Parent P-Code"].value_counts().to_dict()
    assert pcodes == set(hnd["P-Code"])
    assert "HN1628" in pcodes  # Nueva Frontera, the newest municipio


def test_gtm_not_municipios_dropped(engine: Engine) -> None:
    names = _scalar(engine, "SELECT string_agg(name, ',') FROM admin_units WHERE country = 'GTM'")
    assert "Lago" not in str(names) and "Belice" not in str(names)
    assert _scalar(engine, "SELECT count(*) FROM admin_units WHERE pcode IN ('GT0000', 'GT4000')") == 0


def test_livingston_repaired_with_make_valid(engine: Engine) -> None:
    area = _scalar(engine, "SELECT area_km2 FROM admin_units WHERE pcode = 'GT1802'")
    assert area == pytest.approx(2353, abs=5)  # buffer(0) would give ≈1,763
    assert _scalar(engine, "SELECT bool_and(ST_IsValid(geom)) FROM admin_units")


def test_gtm_206_207_swap_corrected(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = {
            r.pcode: r
            for r in conn.execute(
                text(
                    "SELECT pcode, name, area_km2, ST_X(ST_Centroid(geom)) AS lon, ST_Y(ST_Centroid(geom)) AS lat "
                    "FROM admin_units WHERE pcode IN ('GT0206', 'GT0207')"
                )
            )
        }
    sansare, sanarate = rows["GT0206"], rows["GT0207"]
    assert (sansare.name, sanarate.name) == ("Sansare", "Sanarate")
    assert sansare.area_km2 == pytest.approx(144, abs=3)
    assert sanarate.area_km2 == pytest.approx(275, abs=3)
    assert (sansare.lon, sansare.lat) == (pytest.approx(-90.10, abs=0.03), pytest.approx(14.75, abs=0.03))
    assert (sanarate.lon, sanarate.lat) == (pytest.approx(-90.24, abs=0.03), pytest.approx(14.81, abs=0.03))


def test_slv_2024_partitions_the_262_distritos(engine: Engine) -> None:
    with engine.connect() as conn:
        a2021, a2024 = conn.execute(
            text(
                "SELECT sum(area_km2) FILTER (WHERE boundary_set_id = 'slv-2021-distritos'), "
                "sum(area_km2) FILTER (WHERE boundary_set_id = 'slv-2024-municipios') "
                "FROM admin_units WHERE country = 'SLV' AND level = 2"
            )
        ).one()
        shares = conn.execute(
            text(
                "SELECT count(*), min(share_of_from), max(share_of_from) FROM crosswalk "
                "WHERE from_set = 'slv-2021-distritos' AND to_set = 'slv-2024-municipios'"
            )
        ).one()
        per_municipio = conn.execute(
            text("SELECT to_pcode, sum(share_of_to) FROM crosswalk GROUP BY to_pcode")
        ).all()
        overlap = conn.execute(
            text(
                "SELECT coalesce(sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography)), 0) / 1e6 "
                "FROM admin_units a JOIN admin_units b ON a.boundary_set_id = b.boundary_set_id "
                "AND a.level = b.level AND a.pcode < b.pcode AND ST_Intersects(a.geom, b.geom) "
                "WHERE a.boundary_set_id = 'slv-2024-municipios' AND a.level = 2"
            )
        ).scalar()
    assert a2024 == pytest.approx(a2021, rel=1e-6)
    assert shares[0] == 262
    assert shares[1] == pytest.approx(1, abs=1e-6) and shares[2] == pytest.approx(1, abs=1e-9)
    assert len(per_municipio) == 44
    assert all(s == pytest.approx(1, abs=1e-6) for _, s in per_municipio)
    assert overlap < 0.01  # km²: the 44 do not overlap each other


def test_slv_pcodes_and_codes(engine: Engine) -> None:
    with engine.connect() as conn:
        units = {
            r.pcode: r
            for r in conn.execute(
                text(
                    "SELECT pcode, national_code, name, parent_pcode, boundary_set_id FROM admin_units "
                    "WHERE country = 'SLV'"
                )
            )
        }
    # DIGESTYC codes come from the crosswalk table, including its pinned pairs
    assert units["SV0209"].national_code == "0909"
    assert units["SV1416"].national_code == "1116"
    # OCHA numbers departments alphabetically: SV12 is Santa Ana, DIGESTYC 02
    assert units["SV12"].name == "Santa Ana" and units["SV12"].national_code == "02"
    m = units["SVM0113"]
    assert (m.name, m.national_code, m.parent_pcode, m.boundary_set_id) == (
        "Ahuachapán Norte",
        "0113",
        "SV01",
        "slv-2024-municipios",
    )
    new = [p for p, u in units.items() if u.boundary_set_id == "slv-2024-municipios" and len(p) > 4]
    assert len(new) == 44 and all(p.startswith("SVM") for p in new)
    # water bodies are not distritos; names are read as UTF-8
    assert not {"SV0399", "SV1099", "SV1298", "SV1299"} & set(units)
    assert units["SV02"].name == "Cabañas"
    assert not any("Ã" in u.name for u in units.values())


def test_slv_aliases_resolved(engine: Engine) -> None:
    """The 7 distritos whose names differ in the reform table land in the right municipio."""
    with engine.connect() as conn:
        pairs = dict(
            conn.execute(
                text(
                    "SELECT a.name || '/' || d.name, m.name FROM crosswalk x "
                    "JOIN admin_units a ON a.boundary_set_id = x.from_set AND a.pcode = x.from_pcode "
                    "JOIN admin_units d ON d.boundary_set_id = a.boundary_set_id AND d.pcode = a.parent_pcode "
                    "JOIN admin_units m ON m.boundary_set_id = x.to_set AND m.pcode = x.to_pcode"
                )
            ).all()
        )
    assert pairs["Nueva San Salvador/La Libertad"].startswith("La Libertad")
    assert pairs["Delgado/San Salvador"] == "San Salvador Centro"
    assert pairs["Santo Domingo/Sonsonate"] == "Sonsonate Centro"
    assert pairs["San José/La Unión"] == "La Unión Norte"
    assert len(pairs) == 262


def test_default_sets(engine: Engine) -> None:
    with engine.connect() as conn:
        defaults = dict(conn.execute(text("SELECT country, id FROM boundary_sets WHERE is_default")).all())
    assert defaults == {"GTM": "gtm-municipios", "SLV": "slv-2024-municipios", "HND": "hnd-municipios"}


def test_areas_are_equal_area_and_simplified_geometry_valid(engine: Engine) -> None:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT max(abs(area_km2 - ST_Area(geom::geography) / 1e6) / area_km2), "
                "bool_and(ST_IsValid(geom_simple)), sum(ST_NPoints(geom_simple))::float / sum(ST_NPoints(geom)) "
                "FROM admin_units"
            )
        ).one()
    assert row[0] < 0.005  # the equal-area projection agrees with geodesic areas within 0.5 %
    assert row[1] is True
    assert row[2] < 0.8  # the serving copy is lighter


def test_restore_department_accent() -> None:
    assert restore_department_accent("Ahuachapan Norte", "Ahuachapán") == "Ahuachapán Norte"
    assert restore_department_accent("La Union Sur", "La Unión") == "La Unión Sur"
    assert restore_department_accent("Cabañas Este", "Cabañas") == "Cabañas Este"
    assert restore_department_accent("Santa Tecla", "La Libertad") == "Santa Tecla"
