"""Guatemala's DesInventar records (gtm-desinventar): parsing and name matching against the data README's
known answers, the two pillar-I indicators recomputed independently from the CSV, the event endpoint,
and atomic, idempotent loads."""

from __future__ import annotations

import csv
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.errors import DataError
from app.ingest.desinventar import (
    AFFECTED_CODE,
    EVENTS_CODE,
    HYDROMET_TYPES,
    SET_ID,
    SOURCE_ID,
    match_municipios,
    parse_events,
    read_records,
)
from app.ingest.layers import ABSENT_ASSUMED_ZERO, LayerReport
from app.ingest.matching import units_frame
from app.ingest.run import load_source
from app.settings import Settings
from app.sources import Source, load_manifest, sha256_of
from tests.conftest import values_with_flags

Fresh = tuple[Engine, Settings]
FILE = "Datos-Historicos_v1.csv"

# the 22 department-level records groups (no Municipio): the only pairs that cannot be matched
UNMATCHED = [
    ("ALTA VERAPAZ", "", 15),
    ("BAJA VERAPAZ", "", 9),
    ("CHIMALTENANGO", "", 5),
    ("CHIQUIMULA", "", 6),
    ("EL PROGRESO", "", 11),
    ("ESCUINTLA", "", 16),
    ("GUATEMALA", "", 4),
    ("HUEHUETENANGO", "", 9),
    ("IZABAL", "", 11),
    ("JALAPA", "", 10),
    ("JUTIAPA", "", 3),
    ("PETEN", "", 14),
    ("QUETZALTENANGO", "", 11),
    ("QUICHE", "", 11),
    ("RETALHULEU", "", 11),
    ("SACATEPEQUEZ", "", 3),
    ("SAN MARCOS", "", 8),
    ("SANTA ROSA", "", 5),
    ("SOLOLA", "", 12),
    ("SUCHITEPEQUEZ", "", 7),
    ("TOTONICAPAN", "", 5),
    ("ZACAPA", "", 18),
]


def _csv_path(settings: Settings) -> Path:
    assert settings.data_mirror is not None
    return settings.data_mirror / "hazards" / SOURCE_ID / FILE


def _raw_rows(settings: Settings) -> list[dict[str, str]]:
    """The CSV read with the standard library only, every header and cell stripped."""
    with _csv_path(settings).open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        return [dict(zip(header, (c.strip() for c in row), strict=True)) for row in reader]


def _expected(rows: list[dict[str, str]], dep: str, mun: str, population: float) -> tuple[float, float]:
    """Events per year and affected per 1,000 for one municipio, computed from the raw rows."""
    mine = [r for r in rows if (r["Departamento"], r["Municipio"]) == (dep, mun)]
    hydro = [r for r in mine if r["Evento"] in HYDROMET_TYPES]
    events = len({(r["Evento"], r["Fecha"]) for r in hydro})
    people = sum(float(r["Afectados"] or 0) + float(r["Damnificados"] or 0) for r in hydro)
    return events / 28, people * 1000 / population


def _stored(engine: Engine) -> dict[str, object]:
    """What this source stored: events, its observations, its files (load times excluded)."""
    with engine.connect() as conn:
        return {
            "events": conn.execute(
                text(
                    "SELECT serial, event_type, hydromet, date, year, department_name, municipio_name, "
                    "boundary_set_id, pcode, place, deaths, injured, missing, houses_destroyed, "
                    "houses_affected, victims, affected, glide FROM hazard_events WHERE source_id = :s "
                    "ORDER BY serial"
                ),
                {"s": SOURCE_ID},
            ).all(),
            "observations": conn.execute(
                text(
                    "SELECT indicator_code, pcode, period, value, flags FROM observations "
                    "WHERE source_id = :s ORDER BY 1, 2, 3"  # period too: hydromet_events_year has 28
                ),
                {"s": SOURCE_ID},
            ).all(),
            "files": conn.execute(
                text("SELECT name, sha256 FROM source_files WHERE source_id = :s ORDER BY 1"),
                {"s": SOURCE_ID},
            ).all(),
        }


# --- parsing -------------------------------------------------------------------------------------------


def test_records_and_event_types_match_the_readme(settings: Settings) -> None:
    records = read_records(_csv_path(settings))
    assert len(records) == 7545
    types = Counter(records["Evento"])
    assert types["LANDSLIDE"] == 1627 and types["FLOOD"] == 1551 and types["FIRE"] == 1342
    assert types["RAIN"] == 840 and types["FORESTFIRE"] == 539 and types["SPATE"] == 359
    assert types["EARTHQUAKE"] == 239 and types["STORM"] == 211 and types["DROUGHT"] == 26
    assert set(HYDROMET_TYPES) <= set(types)  # the spellings of the file
    assert len(records[["Departamento", "Municipio"]].drop_duplicates()) == 354


def test_dates_years_and_double_entries(settings: Settings) -> None:
    path = _csv_path(settings)
    events, notes = parse_events(read_records(path), path)
    assert len(events) == 7541  # 4 double entries dropped (serials 1573, 288, 726, 451)
    assert events["serial"].is_unique
    assert {"1909", "1909#2"} <= set(events["serial"])  # two different floods share serial 1909
    by_serial = events.set_index("serial")
    undated = events[events["date"].isna()]
    assert sorted(undated["serial"]) == ["2009-00088", "330"]
    assert by_serial.loc["2009-00088", "year"] == 2009  # year from the Serial prefix
    assert pd_isna(by_serial.loc["330", "year"])  # a running number: no year
    assert events["year"].dropna().between(1988, 2015).all()
    assert sum(events["hydromet"]) == 4613
    assert any("2009/06/31" in n for n in notes) and any("1992/12/40" in n for n in notes)


def pd_isna(value: object) -> bool:
    return value is None or value != value  # NaN is the only value unequal to itself


# --- matching --------------------------------------------------------------------------------------------


def test_names_match_ine_codes(engine: Engine, settings: Settings) -> None:
    path = _csv_path(settings)
    events, _ = parse_events(read_records(path), path)
    with engine.connect() as conn:
        match = match_municipios(events, units_frame(conn, SET_ID))
    assert match.errors == []
    assert match.unmatched == UNMATCHED
    matched = sum(
        1
        for d, m in zip(events["department_name"], events["municipio_name"], strict=True)
        if match.found[(d, m)]
    )
    assert matched == 7337 and matched / len(events) >= 0.95  # 97.3 %
    f = match.found
    assert f[("SOLOLA", "STA. MARIA VISITACION")] == "GT0703"  # abbreviation
    assert f[("ESCUINTLA", "SANTA LUCIA COTZ.")] == "GT0502"
    assert f[("SAN MARCOS", "SAN PEDRO SAC.")] == "GT1202"
    assert f[("SAN MARCOS", "TAJAMULCO")] == "GT1209"  # alias: INE spells it Tajumulco
    assert f[("ALTA VERAPAZ", "LA TINTA")] == "GT1616"  # Santa Catalina La Tinta
    assert f[("QUICHE", "PACHALÚM")] == "GT1421"  # accents ignored
    assert f[("GUATEMALA", "GUATEMALA")] == "GT0101"


# --- stored values -------------------------------------------------------------------------------------


def test_stored_events_and_provenance(engine: Engine) -> None:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*) AS n, count(pcode) AS matched, count(date) AS dated, "
                "count(*) FILTER (WHERE hydromet) AS hydro, count(DISTINCT pcode) AS units "
                "FROM hazard_events WHERE source_id = :s"
            ),
            {"s": SOURCE_ID},
        ).one()
        files: dict[str, str] = dict(
            conn.execute(
                text("SELECT name, sha256 FROM source_files WHERE source_id = :s"), {"s": SOURCE_ID}
            ).all()
        )
    assert (row.n, row.matched, row.dated, row.hydro) == (7541, 7337, 7539, 4613)
    assert files[FILE] == "eb95d7593185c4b09030e2714aed202a25236fa2cbace089a9249485e291e877"


def test_indicators_recomputed_from_the_csv(engine: Engine, settings: Settings) -> None:
    rows = _raw_rows(settings)
    events = values_with_flags(engine, EVENTS_CODE)
    affected = values_with_flags(engine, AFFECTED_CODE)
    pop = values_with_flags(engine, "population_2018")
    assert len(events) == len(affected) == 340
    assert {per for _, _, per in [*events.values(), *affected.values()]} == {"1988-2015"}
    for pcode, dep, mun in [
        ("GT0101", "GUATEMALA", "GUATEMALA"),
        ("GT0510", "ESCUINTLA", "IZTAPA"),
        ("GT0513", "ESCUINTLA", "NUEVA CONCEPCION"),
        ("GT1209", "SAN MARCOS", "TAJAMULCO"),
    ]:
        population = pop[pcode][0]
        assert population is not None
        want_events, want_affected = _expected(rows, dep, mun, population)
        assert events[pcode][0] == pytest.approx(want_events)
        assert affected[pcode][0] == pytest.approx(want_affected)
        assert events[pcode][1] == affected[pcode][1] == []
    # known values: Guatemala City 319 events in 28 years; Iztapa and Nueva Concepción on the coast
    assert events["GT0101"][0] == pytest.approx(319 / 28)
    assert events["GT0513"][0] == pytest.approx(59 / 28)
    # municipios with no hydro-met record: 0, flagged as an assumed zero
    absent = {p for p, (_, flags, _) in events.items() if ABSENT_ASSUMED_ZERO in flags}
    assert len(absent) == 18
    assert all(events[p][0] == 0 and affected[p][0] == 0 for p in absent)
    assert {p for p, (_, flags, _) in affected.items() if ABSENT_ASSUMED_ZERO in flags} == absent


# --- API -----------------------------------------------------------------------------------------------


def test_events_endpoint_filters(client: TestClient, settings: Settings) -> None:
    rows = _raw_rows(settings)
    r = client.get("/v1/hazards/events", params={"country": "GTM", "municipio": "Iztapa", "type": "flood"})
    assert r.status_code == 200
    body = r.json()
    want = [
        x
        for x in rows
        if (x["Departamento"], x["Municipio"], x["Evento"]) == ("ESCUINTLA", "IZTAPA", "FLOOD")
    ]
    assert body["total"] == len(want) == len(body["items"])
    assert body["filters"]["pcode"] == "GT0510"
    assert {i["pcode"] for i in body["items"]} == {"GT0510"}
    assert body["by_type"] == [
        {
            "event_type": "FLOOD",
            "hydromet": True,
            "records": len(want),
            "deaths": sum(int(x["Muertos"] or 0) for x in want),
            "victims": sum(int(x["Damnificados"] or 0) for x in want),
            "affected": sum(int(x["Afectados"] or 0) for x in want),
            "first_year": min(int(x["Fecha"][-4:]) for x in want),
            "last_year": max(int(x["Fecha"][-4:]) for x in want),
        }
    ]
    item = body["items"][-1]
    assert item["source"] == SOURCE_ID and item["unit_name"] == "Iztapa"
    assert item["date"] is not None and item["year"] == int(item["date"][:4])
    assert body["sources"][0]["id"] == SOURCE_ID and body["sources"][0]["citation"]
    assert body["sources"][0]["files"][0]["sha256"]

    # by P-code, years and paging
    r = client.get(
        "/v1/hazards/events",
        params={"country": "GTM", "municipio": "gt0101", "year_from": 2010, "year_to": 2011, "limit": 5},
    )
    body = r.json()
    want = [
        x
        for x in rows
        if (x["Departamento"], x["Municipio"]) == ("GUATEMALA", "GUATEMALA")
        and x["Fecha"][-4:] in ("2010", "2011")
    ]
    assert r.status_code == 200 and body["total"] == len(want) and len(body["items"]) == 5
    assert sum(t["records"] for t in body["by_type"]) == body["total"]
    page2 = client.get(
        "/v1/hazards/events",
        params={"municipio": "GT0101", "year_from": 2010, "year_to": 2011, "limit": 5, "offset": 5},
    ).json()
    assert {i["serial"] for i in page2["items"]}.isdisjoint({i["serial"] for i in body["items"]})

    # hydro-met only, whole country
    body = client.get("/v1/hazards/events", params={"country": "GTM", "hydromet": "true", "limit": 1}).json()
    assert body["total"] == 4613
    assert {t["event_type"] for t in body["by_type"]} == set(HYDROMET_TYPES)
    # no events stored for Honduras: an empty, valid answer
    assert client.get("/v1/hazards/events", params={"country": "HND"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "TSUNAMI"}, "valid types: ACCIDENT, AVALANCHE"),
        ({"municipio": "Atlantis", "country": "GTM"}, "Unknown municipio 'Atlantis' in GTM"),
        ({"municipio": "La Democracia", "country": "GTM"}, "ambiguous.*GT0503.*GT1312"),
        ({"country": "MEX"}, "country must be one of"),
        ({"year_from": 2010, "year_to": 2000}, "year_from \\(2010\\) is after year_to \\(2000\\)"),
    ],
)
def test_events_endpoint_rejects_bad_input(
    client: TestClient, params: dict[str, object], message: str
) -> None:
    r = client.get("/v1/hazards/events", params=params)
    assert r.status_code == 400
    assert r.json()["code"] == "InvalidParameter"
    assert re.search(message, r.json()["description"])


def test_events_endpoint_validates_numbers(client: TestClient) -> None:
    assert client.get("/v1/hazards/events", params={"limit": 0}).status_code == 422
    assert client.get("/v1/hazards/events", params={"year_from": "soon"}).status_code == 422


# --- loads ---------------------------------------------------------------------------------------------


def _damaged(settings: Settings, tmp_path: Path, content: bytes) -> tuple[Settings, dict[str, Source]]:
    """Settings whose mirror holds a damaged copy of the CSV, the manifest's sha256 patched to match."""
    sources = load_manifest(settings.manifest)
    source = sources[SOURCE_ID]
    folder = tmp_path / "mirror" / source.mirror_dir
    folder.mkdir(parents=True)
    assert settings.data_mirror is not None
    files = []
    for f in source.files:
        dest = folder / f.name
        if f.name == FILE:
            dest.write_bytes(content)
        else:
            shutil.copyfile(settings.data_mirror / source.mirror_dir / f.name, dest)
        files.append(replace(f, sha256=sha256_of(dest), url=""))
    sources[SOURCE_ID] = replace(source, files=tuple(files))
    private = settings.model_copy(
        update={"data_mirror": tmp_path / "mirror", "data_cache": tmp_path / "cache"}
    )
    return private, sources


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2], r"line \d+ has \d+ fields, the header 24 .*truncated or damaged"),
        (lambda b: b.replace(b"Afectados ,", b"Affected ,", 1), r"missing columns \['Afectados'\]"),
        (lambda b: b.replace(b",180,", b",18O,", 1), r"column 'Afectados' has text.*18O"),
        (lambda b: b[:0], r"has no records"),
    ],
    ids=["truncated", "missing-column", "text-in-numbers", "empty"],
)
def test_damaged_file_stores_nothing(fresh: Fresh, tmp_path: Path, damage: object, message: str) -> None:
    engine, settings = fresh
    before = _stored(engine)
    assert len(before["events"]) == 7541  # type: ignore[arg-type]
    content = damage(_csv_path(settings).read_bytes())  # type: ignore[operator]
    private, sources = _damaged(settings, tmp_path, content)
    with pytest.raises(DataError, match=rf"Source '{SOURCE_ID}', file '{FILE}': .*{message}"):
        load_source(engine, private, SOURCE_ID, sources=sources, force=True)
    assert _stored(engine) == before


def test_population_is_required(fresh: Fresh) -> None:
    engine, settings = fresh
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM observations WHERE indicator_code = 'population_2018'"))
    before = _stored(engine)
    with pytest.raises(DataError, match="load gtm-mvi-unhcr first"):
        load_source(engine, settings, SOURCE_ID, force=True)
    assert _stored(engine) == before


def test_reload_is_idempotent(fresh: Fresh) -> None:
    engine, settings = fresh
    before = _stored(engine)
    again = load_source(engine, settings, SOURCE_ID)
    assert again.status == "unchanged"
    forced = load_source(engine, settings, SOURCE_ID, force=True)
    assert isinstance(forced, LayerReport) and forced.status == "loaded"
    assert forced.as_dict()["values"] == {
        AFFECTED_CODE: 340,
        EVENTS_CODE: 340,
        "hydromet_events_year": 340 * 28,
    }
    assert any("7337 of 7541 stored events matched" in n and "(97.3%)" in n for n in forced.notes)
    assert len([n for n in forced.notes if n.startswith("unmatched:")]) == len(UNMATCHED)
    assert _stored(engine) == before
