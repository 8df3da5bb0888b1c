"""Validation against a reference: synthetic references whose answer is known, through the app and the CLI,
on the real data of the test database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app import indicators
from app.scoring.service import DEFAULT_PROFILE, ensure_run, profile_by_id
from app.validation import spearman_interval, tier1_hit_rate, top_k_overlap

META = {"measures": "synthetic test values", "source": "the test suite", "period": "2024"}


@pytest.fixture(scope="module")
def scores(engine: Engine) -> dict[str, dict[str, Any]]:
    """The default run's stored scores at full precision, with department, tier and population."""
    run = ensure_run(engine, profile_by_id(DEFAULT_PROFILE))
    with engine.connect() as conn:
        rows = conn.execute(
            text("""
            SELECT s.pcode, s.country, s.boundary_set_id, s.score, s.rank, s.tier, s.ranked, u.name,
                   u.parent_pcode, d.name AS dep_name
            FROM scores s
            JOIN admin_units u ON u.boundary_set_id = s.boundary_set_id AND u.pcode = s.pcode
            JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
            WHERE s.run_id = :run"""),
            {"run": run},
        ).mappings()
        out = {r["pcode"]: dict(r) for r in rows}
        for set_id in {r["boundary_set_id"] for r in out.values()}:
            _, pop = indicators.population(conn, set_id)
            for p, v in pop.items():
                if p in out:
                    out[str(p)]["pop"] = float(v)
    return out


def _country(scores: dict[str, dict[str, Any]], iso: str) -> list[dict[str, Any]]:
    return sorted(
        (s for s in scores.values() if s["country"] == iso and s["ranked"]), key=lambda s: s["pcode"]
    )


def _post(client: TestClient, rows: list[dict[str, Any]], **options: Any) -> Any:
    return client.post("/v1/validation", json={**META, **options, "rows": rows})


def test_a_reference_equal_to_the_scores_agrees_perfectly(
    client: TestClient, scores: dict[str, dict[str, Any]]
) -> None:
    units = _country(scores, "GTM")
    r = _post(client, [{"pcode": s["pcode"], "value": s["score"]} for s in units])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matched"] == len(units) == 340 and body["unmatched"] == [] and body["stored"] is False
    assert body["reference"] == {**META, "url": None, "direction": 1, "level": "municipio", "rows": 340}
    gtm = body["countries"]["GTM"]["units"]
    assert gtm["spearman"]["rho"] == 1.0 and gtm["spearman"]["ci95"] == [1.0, 1.0]
    assert gtm["top_k"]["overlap"] == 20 and gtm["top_k"]["expected_by_chance"] == round(20 * 20 / 340, 2)
    tier1 = sum(1 for s in units if s["tier"] == 1)
    assert gtm["tier1"]["hits"] == 20 and gtm["tier1"]["hit_rate"] == 1.0
    assert gtm["tier1"]["expected_by_chance"] == round(20 * tier1 / 340, 2)
    assert gtm["tier1"]["chance_rate"] == round(tier1 / 340, 4)
    assert gtm["disagreements"] == []
    deps = body["countries"]["GTM"]["departments"]
    assert deps["n"] == 22 and deps["weighting"] == "population" and deps["spearman"]["rho"] == 1.0
    assert body["profile"]["id"] == DEFAULT_PROFILE


def test_direction_minus_one_reads_a_lower_value_as_higher_priority(
    client: TestClient, scores: dict[str, dict[str, Any]]
) -> None:
    units = _country(scores, "SLV")
    rows = [{"pcode": s["pcode"], "value": -s["score"]} for s in units]
    assert _post(client, rows).json()["countries"]["SLV"]["units"]["spearman"]["rho"] == -1.0
    assert _post(client, rows, direction=-1).json()["countries"]["SLV"]["units"]["spearman"]["rho"] == 1.0
    csv = "pcode,value\n" + "".join(f"{r['pcode']},{r['value']!r}\n" for r in rows)
    form = client.post(
        "/v1/validation", files={"file": ("r.csv", csv.encode())}, data={**META, "direction": "-1"}
    )
    assert form.json()["countries"]["SLV"]["units"]["spearman"]["rho"] == 1.0
    wrong = client.post(
        "/v1/validation", files={"file": ("r.csv", csv.encode())}, data={**META, "direction": "2"}
    )
    assert wrong.status_code == 400 and "direction" in wrong.json()["description"]


def test_a_shuffled_reference_gives_about_zero_within_its_interval(
    client: TestClient, scores: dict[str, dict[str, Any]]
) -> None:
    units = _country(scores, "GTM")
    values = np.random.default_rng(7).permutation([s["score"] for s in units])
    body = _post(
        client, [{"pcode": s["pcode"], "value": float(v)} for s, v in zip(units, values, strict=True)]
    )
    gtm = body.json()["countries"]["GTM"]["units"]
    rho, (lo, hi) = gtm["spearman"]["rho"], gtm["spearman"]["ci95"]
    assert lo < 0 < hi and abs(rho) < 0.15 and hi - lo < 0.3  # n = 340: an interval of about ±0.11
    assert gtm["top_k"]["p_value"] > 0.05 and gtm["tier1"]["p_value"] > 0.01
    assert len(gtm["disagreements"]) == 10
    diffs = [abs(d["rank_difference"]) for d in gtm["disagreements"]]
    assert diffs == sorted(diffs, reverse=True) and diffs[0] > 200
    # the same seed gives the same interval; another seed another one
    again = _post(
        client, [{"pcode": s["pcode"], "value": float(v)} for s, v in zip(units, values, strict=True)]
    )
    assert again.json()["countries"]["GTM"]["units"]["spearman"]["ci95"] == [lo, hi]
    other = _post(
        client, [{"pcode": s["pcode"], "value": float(v)} for s, v in zip(units, values, strict=True)], seed=3
    )
    assert other.json()["countries"]["GTM"]["units"]["spearman"]["ci95"] != [lo, hi]


def test_counts_are_compared_per_capita_when_asked(
    client: TestClient, scores: dict[str, dict[str, Any]]
) -> None:
    """A count equal to score × population / 1,000 is the score per 1,000 residents exactly."""
    units = _country(scores, "GTM")
    rows = [{"pcode": s["pcode"], "value": s["score"] * s["pop"] / 1000} for s in units]
    per_capita = _post(client, rows, per_capita=True).json()
    assert per_capita["countries"]["GTM"]["units"]["spearman"]["rho"] == 1.0
    assert per_capita["options"]["population"] == {"GTM": "population_2018"}
    csv = "pcode,value\n" + "".join(f"{r['pcode']},{r['value']!r}\n" for r in rows)
    form = client.post(
        "/v1/validation", files={"file": ("r.csv", csv.encode())}, data={**META, "per_capita": "true"}
    )
    assert form.json()["countries"]["GTM"]["units"]["spearman"]["rho"] == 1.0
    raw = _post(client, rows).json()["countries"]["GTM"]["units"]["spearman"]["rho"]
    assert raw < 0.9  # as counts, the big municipios come first
    pair = next(p for p in per_capita["countries"]["GTM"]["pairs"] if p["pcode"] == units[0]["pcode"])
    assert pair["value"] == pytest.approx(units[0]["score"], abs=1e-3)


def test_units_without_population_are_listed_and_left_out(
    client: TestClient, scores: dict[str, dict[str, Any]]
) -> None:
    units = _country(scores, "HND")
    without = sorted(s["pcode"] for s in units if "pop" not in s)
    assert without  # Honduras' 2014 population misses the municipios IUDPAS does not list
    body = _post(
        client, [{"pcode": s["pcode"], "value": 1.0 + i} for i, s in enumerate(units)], per_capita=True
    )
    body = body.json()
    assert sorted(body["no_population"]) == without
    assert body["countries"]["HND"]["units"]["n"] == len(units) - len(without)


def test_a_reference_by_department(client: TestClient, scores: dict[str, dict[str, Any]]) -> None:
    """Department names (case and accents as they come) against the population-weighted mean score."""
    units = _country(scores, "GTM")
    deps: dict[str, list[dict[str, Any]]] = {}
    for s in units:
        deps.setdefault(s["dep_name"], []).append(s)
    rows = [
        {
            "department": name.upper(),
            "value": sum(u["score"] * u["pop"] for u in us) / sum(u["pop"] for u in us),
        }
        for name, us in deps.items()
    ]
    body = _post(client, rows, country="GTM").json()
    assert body["reference"]["level"] == "department" and body["matched"] == 22
    gtm = body["countries"]["GTM"]
    assert gtm["units"] is None
    assert gtm["departments"]["spearman"]["rho"] == 1.0 and gtm["departments"]["disagreements"] == []
    # the pairs carry each department's aggregated score, so a scatter plot can be drawn
    assert len(gtm["pairs"]) == 22
    assert all(p["score"] == pytest.approx(p["value"], abs=0.01) for p in gtm["pairs"])


def test_unmatched_names_get_suggestions(client: TestClient) -> None:
    csv = (
        "municipio,departamento,valor\n"
        "Mixco,Guatemala,4\n"
        "Mixcco,Guatemala,3\n"
        "San José,,2\n"
        "Villa Nueva,GUATEMALA,5\n"
        "Chinautla,Guatemala,1\n"
        "Amatitlan,Guatemala,6\n"
        "Santa Catarina Pinula,Guatemala,2.5\n"
        "Villa Canalez,Guatemala,1.5\n"
    )
    r = client.post(
        "/v1/validation",
        files={"file": ("ref.csv", csv.encode(), "text/csv")},
        data={**META, "country": "GTM"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matched"] == 5
    by_row = {m["row"]: m for m in body["unmatched"]}
    assert set(by_row) == {"row 2 (line 3)", "row 3 (line 4)", "row 8 (line 9)"}
    assert by_row["row 2 (line 3)"]["suggestions"][0]["pcode"] == "GT0108"  # Mixco
    assert "add their department" in by_row["row 3 (line 4)"]["reason"]
    assert {s["pcode"] for s in by_row["row 3 (line 4)"]["suggestions"]} == {"GT0509", "GT1702"}
    assert by_row["row 8 (line 9)"]["suggestions"][0]["pcode"] == "GT0116"  # Villa Canales


def test_pcodes_without_zeros_and_old_geographies_get_pointers(client: TestClient) -> None:
    rows = [{"pcode": "GT101", "value": 1}, {"pcode": "SV0101", "value": 2}, {"pcode": "GT0108", "value": 3}]
    body = _post(client, rows).json()
    gt, sv = body["unmatched"]
    assert gt["suggestions"][0]["pcode"] == "GT0101"
    assert "slv-2021-distritos" in sv["reason"] and sv["suggestions"][0]["pcode"].startswith("SVM")


@pytest.mark.parametrize(
    ("csv", "status", "message"),
    [
        ("pcode,value\nGT0101,1\nGT0102,2\nGT0103,abc\n", 422, "row 3 (line 4): value 'abc' is not a finite"),
        ("pcode,value\nGT0101,1\nGT0102,\n", 422, "row 2 (line 3): no value"),
        ("pcode,value\nGT0101,1\nGT0102,inf\n", 422, "row 2 (line 3): value 'inf'"),
        ("pcode,value\nGT0101,1\n,2\n", 422, "row 2 (line 3): no pcode, municipio or department"),
        ("pcode,value\nGT0101,1\ngt0101,2\n", 422, "row 1 (line 2) and row 2 (line 3) both match GT0101"),
        ("pcode,value\nGT0101,1\nGT01,2\nGT0102,3\n", 422, "row 2 (line 3) keys a department (GT01)"),
        ("pcode,value,country\nGT0101,1,Mexico\n", 422, "row 1 (line 2): country 'Mexico'"),
        ("pcode,value\nXX0101,1\nXX0102,2\n", 422, "No row of the reference matches"),
        ("pcode,amount\nGT0101,1\n", 422, "no 'value' column"),
        ("id,value\nGT0101,1\n", 422, "no key column"),
        ("pcode,value\nGT0101,1,7\n", 422, "row 1 (line 2): 3 fields but the header has 2"),
        ("pcode,value\n", 422, "has a header but no rows"),
    ],
)
def test_bad_files_get_a_4xx_naming_the_row(client: TestClient, csv: str, status: int, message: str) -> None:
    r = client.post("/v1/validation", files={"file": ("ref.csv", csv.encode(), "text/csv")}, data=META)
    assert r.status_code == status, r.text
    assert message in r.json()["description"], r.json()


def test_bad_requests_say_what_to_fix(client: TestClient) -> None:
    rows = [{"pcode": "GT0101", "value": 1}]
    missing = client.post("/v1/validation", json={"rows": rows, "source": "x", "period": "y"})
    assert missing.status_code == 400 and "measures" in missing.json()["description"]
    typo = _post(client, rows, per_capital=True)
    assert typo.status_code == 400 and "per_capital" in typo.json()["description"]
    unknown = _post(client, rows, profile="nope")
    assert unknown.status_code == 404 and "root-causes-2021" in unknown.json()["description"]
    k = _post(client, rows, top_k=0)
    assert k.status_code == 400 and "top_k" in k.json()["description"]
    nested = _post(client, [{"pcode": {"x": 1}, "value": 1}])
    assert nested.status_code == 422 and "row 1, field 'pcode'" in nested.json()["description"]
    broken = client.post("/v1/validation", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["description"]
    plain = client.post("/v1/validation", content=b"pcode,value\n", headers={"Content-Type": "text/csv"})
    assert plain.status_code == 415 and "multipart/form-data" in plain.json()["description"]
    no_file = client.post("/v1/validation", data=META, files={"other": ("x.csv", b"a", "text/csv")})
    assert no_file.status_code == 400 and "'file'" in no_file.json()["description"]
    xlsx = client.post("/v1/validation", data=META, files={"file": ("x.xlsx", b"PK..", "application/zip")})
    assert xlsx.status_code == 400 and ".csv or .json" in xlsx.json()["description"]
    latin = client.post(
        "/v1/validation", data=META, files={"file": ("x.csv", "municipio,value\nPetén,1\n".encode("latin-1"))}
    )
    assert latin.status_code == 422 and "not UTF-8" in latin.json()["description"]


def test_a_json_file_may_carry_its_metadata(client: TestClient, scores: dict[str, dict[str, Any]]) -> None:
    units = _country(scores, "SLV")
    doc = {**META, "rows": [{"pcode": s["pcode"], "value": s["score"]} for s in units]}
    r = client.post(
        "/v1/validation",
        files={"file": ("ref.json", json.dumps(doc).encode(), "application/json")},
        data={"period": "2023", "top_k": "5"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reference"]["period"] == "2023" and body["reference"]["measures"] == META["measures"]
    assert body["countries"]["SLV"]["units"]["top_k"]["k"] == 5
    assert body["countries"]["SLV"]["units"]["spearman"]["rho"] == 1.0


def test_nothing_is_stored(client: TestClient, engine: Engine, scores: dict[str, dict[str, Any]]) -> None:
    def counts() -> tuple[int, ...]:
        with engine.connect() as conn:
            return tuple(
                conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("observations", "indicators", "sources", "score_runs", "scores")
            )

    before = counts()
    units = _country(scores, "HND")
    assert _post(client, [{"pcode": s["pcode"], "value": s["score"]} for s in units]).status_code == 200
    assert counts() == before


def test_hostile_strings_match_nothing_and_change_nothing(client: TestClient, engine: Engine) -> None:
    from tests.conftest import snapshot

    before = snapshot(engine)
    evil = "x'; DROP TABLE admin_units; --"
    for row in ({"pcode": evil}, {"municipio": evil, "department": evil}, {"department": "\u0000"}):
        r = _post(client, [{**row, "value": 1}])
        assert r.status_code == 422 and "No row of the reference matches" in r.json()["description"]
    assert _post(client, [{"pcode": "GT0101", "value": 1}], country=evil).status_code == 400
    assert snapshot(engine) == before


def test_the_endpoint_is_documented(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/v1/validation"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert "rows" in content["application/json"]["schema"]["required"]
    assert "per_capita" in content["multipart/form-data"]["schema"]["properties"]


def test_chance_formulas() -> None:
    """Hypergeometric expectations: k²/n for the top-k overlap, k·N1/N for tier-1 hits."""
    order = [f"u{i:03d}" for i in range(100)]
    reverse = order[::-1]
    t = top_k_overlap(order, reverse, 10)
    assert t["overlap"] == 0 and t["expected_by_chance"] == 1.0 and t["p_value"] == 1.0
    same = top_k_overlap(order, order, 10)
    assert same["overlap"] == 10 and same["p_value"] < 1e-12
    assert top_k_overlap(order[:5], order[:5], 10)["overlap"] is None  # k ≥ n
    import pandas as pd

    tiers = pd.Series([1] * 20 + [2] * 80, index=order)
    hits = tier1_hit_rate(order[:10], tiers, 100, 20)
    assert hits["hits"] == 10 and hits["expected_by_chance"] == 2.0 and hits["chance_rate"] == 0.2
    none = spearman_interval(np.arange(4.0), np.arange(4.0), resamples=100, seed=0)
    assert none["rho"] is None and "fewer than 5" in none["note"]


def test_cli_prints_the_figures_and_fails_clearly(
    loaded_url: str, scores: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from app import cli
    from app.settings import get_settings

    units = _country(scores, "SLV")
    good = tmp_path / "ref.csv"
    good.write_text(
        "municipio;departamento;valor\n"
        + "".join(f"{s['name']};{s['dep_name']};{s['score']}\n" for s in units)
        + "Ahuachapan Nortee;Ahuachapán;1\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("pcode,value\nSVM0113,1\nSVM0114,n/a\n", encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", loaded_url)
    get_settings.cache_clear()
    meta = ["--measures", "scores", "--source", "tests", "--period", "2024"]
    try:
        ok = CliRunner().invoke(cli.app, ["validate", str(good), *meta, "--country", "SLV", "--top-k", "5"])
        assert ok.exit_code == 0, ok.output
        assert "matched 44, unmatched 1" in ok.output
        assert "did you mean Ahuachapán Norte (SVM0113)," in ok.output
        assert "Spearman (n=44)" in ok.output and "1.0 to 1.0" in ok.output
        assert "top-5 overlap" in ok.output and "tier-1 hits of top 5" in ok.output
        as_json = CliRunner().invoke(cli.app, ["validate", str(good), *meta, "--json"])
        assert as_json.exit_code == 0
        body = json.loads(as_json.output)
        # without a country, department 'La Paz' (in Honduras and El Salvador) must be told apart
        la_paz = [m for m in body["unmatched"] if "La Paz" in m["given"]]
        assert la_paz and all("add a country" in m["reason"] for m in la_paz)
        assert body["countries"]["SLV"]["units"]["n"] == 44 - len(la_paz)
        failed = CliRunner().invoke(cli.app, ["validate", str(bad), *meta])
        assert failed.exit_code == 2
        assert "row 2 (line 3): value 'n/a' is not a finite number" in failed.output
        no_meta = CliRunner().invoke(cli.app, ["validate", str(good)])
        assert no_meta.exit_code == 2 and "measures" in no_meta.output
        missing = CliRunner().invoke(cli.app, ["validate", str(tmp_path / "nope.csv"), *meta])
        assert missing.exit_code == 2 and "cannot read" in missing.output
    finally:
        get_settings.cache_clear()
