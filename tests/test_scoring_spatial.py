"""Contiguity, Gi* hot spots and programme zones: synthetic grids with known answers, and real municipios."""

from __future__ import annotations

import warnings

import geopandas as gpd
import libpysal
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from app.scoring.spatial import benjamini_hochberg, contiguity, hotspots, zones
from app.settings import Settings

X0, Y0, STEP, SIZE = -88.0, 15.0, 0.1, 10


def grid(values: np.ndarray, *, x0: float = X0, country: str = "GTM", prefix: str = "G") -> gpd.GeoDataFrame:
    """A SIZE×SIZE grid of STEP° MultiPolygon squares; row r counts north, column c east; key prefix+r+c."""
    rows = []
    for r in range(SIZE):
        for c in range(SIZE):
            cell = shapely.box(x0 + c * STEP, Y0 + r * STEP, x0 + (c + 1) * STEP, Y0 + (r + 1) * STEP)
            rows.append(
                {
                    "key": f"{prefix}{r}{c}",
                    "row": r,
                    "col": c,
                    "country": country,
                    "score": float(values[r, c]),
                    "geometry": shapely.MultiPolygon([cell]),
                }
            )
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")


def planted(
    seed: int = 7,
    *,
    hot: tuple[int, int] | None = (0, 0),
    cold: tuple[int, int] | None = None,
    high: float = 100.0,
) -> np.ndarray:
    """Noise in [40, 60] with 3×3 blocks of high (hot) and 0 (cold) whose lower-left cells are given."""
    values = np.random.default_rng(seed).uniform(40, 60, (SIZE, SIZE))
    for corner, level in ((hot, high), (cold, 0.0)):
        if corner is not None:
            values[corner[0] : corner[0] + 3, corner[1] : corner[1] + 3] = level
    return values


def far_from(frame: gpd.GeoDataFrame, corner: tuple[int, int]) -> pd.Series:
    """Cells that neither belong to nor touch the 3×3 block at corner."""
    dr = np.maximum(corner[0] - frame["row"], frame["row"] - (corner[0] + 2))
    dc = np.maximum(corner[1] - frame["col"], frame["col"] - (corner[1] + 2))
    return pd.Series((np.maximum(dr, dc) > 1).to_numpy(), index=frame["key"])


# --- contiguity ------------------------------------------------------------------------------------


def test_contiguity_is_queen_on_grid() -> None:
    w = contiguity(grid(np.ones((SIZE, SIZE))))
    assert w.n == SIZE * SIZE
    assert sorted(w.neighbors["G00"]) == ["G01", "G10", "G11"]  # the diagonal counts: queen, not rook
    assert len(w.neighbors["G55"]) == 8
    assert w.islands == []


def test_contiguity_keeps_islands_and_rejects_duplicate_ids() -> None:
    frame = grid(np.ones((SIZE, SIZE)))
    island = gpd.GeoDataFrame(
        {"key": ["far"], "geometry": [shapely.box(-80, 10, -79.9, 10.1)]}, crs="EPSG:4326"
    )
    w = contiguity(pd.concat([frame, island], ignore_index=True))
    assert w.islands == ["far"]
    with pytest.raises(ValueError, match="unique"):
        contiguity(pd.concat([frame, frame.iloc[:1]], ignore_index=True))


# --- Gi* --------------------------------------------------------------------------------------------


def test_benjamini_hochberg_known_answers() -> None:
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    assert benjamini_hochberg(p, 0.05) == 0.008
    assert benjamini_hochberg([0.04, 0.03], 0.05) == 0.04  # step-up: the smallest alone fails 0.025
    assert benjamini_hochberg([0.5, 0.9], 0.05) == 0.0
    assert benjamini_hochberg([], 0.05) == 0.0


def test_planted_hot_and_cold_clusters_are_found() -> None:
    frame = grid(planted(hot=(0, 0), cold=(6, 6)))
    result = hotspots(frame)
    assert list(result.columns) == ["gi_z", "p_sim", "significant", "label", "confidence"]
    assert list(result.index) == list(frame["key"])
    assert result.loc["G11", "label"] == "hot"
    assert result.loc["G11", "confidence"] in (95, 99)
    assert result.loc["G11", "gi_z"] > 3
    assert result.loc["G11", "p_sim"] == pytest.approx(2 / 1000)  # two-sided: twice the folded 1/1000
    assert result.loc["G77", "label"] == "cold"
    assert result.loc["G77", "confidence"] in (95, 99)
    assert not result.loc[far_from(frame, (0, 0)), "label"].eq("hot").any()
    assert not result.loc[far_from(frame, (6, 6)), "label"].eq("cold").any()
    assert result["label"].eq("not significant").sum() > 50  # noise is mostly noise


def test_labels_agree_with_significance_and_confidence() -> None:
    result = hotspots(grid(planted(hot=(0, 0), cold=(6, 6))))
    significant = result[result["significant"]]
    assert set(significant["label"]) == {"hot", "cold"}
    assert (significant["gi_z"].gt(0) == significant["label"].eq("hot")).all()
    assert set(significant["confidence"]) <= {95, 99}  # alpha 0.05: significant implies at least 95
    assert result.loc[~result["significant"], "confidence"].isna().all()
    assert set(result.loc[~result["significant"], "label"]) == {"not significant"}
    loose = hotspots(grid(planted(hot=(0, 0), cold=(6, 6))), alpha=0.10)
    assert loose["significant"].sum() >= result["significant"].sum()  # BH rejection sets are nested


def test_same_seed_same_result_and_the_seed_is_used() -> None:
    frame = grid(planted(hot=(0, 0), cold=(6, 6)))
    first, again = hotspots(frame, seed=11), hotspots(frame, seed=11)
    pd.testing.assert_frame_equal(first, again)
    other = hotspots(frame, seed=12)
    assert not np.array_equal(first["p_sim"].to_numpy(), other["p_sim"].to_numpy())
    np.testing.assert_array_equal(first["gi_z"], other["gi_z"])  # the analytic z does not depend on it


def test_hotspots_leave_global_random_state_alone() -> None:
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    hotspots(grid(planted()))
    np.testing.assert_array_equal(np.random.random(3), expected)


def test_groups_are_analysed_separately() -> None:
    # A's hot cluster sits on its east edge, against B's west edge
    a = grid(planted(seed=1, hot=(3, 7), high=300), country="A", prefix="A")
    b = grid(planted(seed=2, hot=None), x0=X0 + SIZE * STEP, country="B", prefix="B")
    both = pd.concat([a, b], ignore_index=True)
    assert "A49" in contiguity(both).neighbors["B40"]  # they really touch
    border = ["B30", "B40", "B50"]

    separate = hotspots(both)
    assert separate.loc["A48", "label"] == "hot"
    assert separate.loc[b["key"], "label"].ne("hot").all()
    pd.testing.assert_frame_equal(separate.loc[b["key"]], hotspots(b))  # B as if A did not exist

    pooled = hotspots(both, group_column=None)
    assert (pooled.loc[border, "gi_z"] > 2.5).all()  # what A's cluster would do to B's border
    assert (separate.loc[border, "gi_z"] < 2).all()


def test_missing_values_are_no_data_and_isolated_units_no_neighbours() -> None:
    values = planted(hot=(0, 0))
    values[9, 9] = np.nan
    values[[8, 8, 9], [0, 1, 1]] = np.nan  # G90 keeps no neighbour with a value
    frame = grid(values)
    island = gpd.GeoDataFrame(
        {
            "key": ["far"],
            "country": ["GTM"],
            "score": [100.0],
            "geometry": [shapely.box(-80, 10, -79.9, 10.1)],
        },
        crs="EPSG:4326",
    )
    result = hotspots(pd.concat([frame, island], ignore_index=True))
    assert result.loc["G99", "label"] == "no data"
    assert result.loc["G99", "confidence"] is None
    assert np.isnan(result.loc["G99", "gi_z"])
    for key in ("far", "G90"):
        assert result.loc[key, "label"] == "no neighbours"
        assert not result.loc[key, "significant"]
        assert np.isnan(result.loc[key, "p_sim"])
    assert result.loc["G11", "label"] == "hot"
    assert result["label"].isin(["hot", "cold", "not significant", "no neighbours", "no data"]).all()


def test_constant_values_are_not_significant_and_negatives_are_refused() -> None:
    result = hotspots(grid(np.full((SIZE, SIZE), 50.0)))
    assert set(result["label"]) == {"not significant"}
    with pytest.raises(ValueError, match="non-negative"):
        hotspots(grid(planted() - 60))


# --- zones ------------------------------------------------------------------------------------------


def two_blobs() -> tuple[gpd.GeoDataFrame, pd.Series]:
    """A grid with a 2×2 blob (scores 90) at (0, 0), a 3×2 blob (scores 95) at (6, 6) and a lone cell."""
    values = np.full((SIZE, SIZE), 10.0)
    values[0:2, 0:2] = 90
    values[6:9, 6:8] = 95
    values[4, 9] = 80
    frame = grid(values)
    frame["pillar"] = np.where(frame["col"] < 7, "IV", "I")
    frame.loc[frame["key"] == "G87", "pillar"] = None
    return frame, pd.Series(frame["score"].to_numpy() >= 80, index=frame["key"])


def test_zones_are_connected_components() -> None:
    frame, members = two_blobs()
    zone, summary = zones(frame, members, contiguity(frame))
    assert list(summary["zone"]) == ["GTM-Z01", "GTM-Z02", "GTM-Z03"]  # by descending mean score
    z1, z2, z3 = (summary.iloc[i] for i in range(3))
    assert z1["members"] == ["G66", "G67", "G76", "G77", "G86", "G87"]
    assert (z1["units"], z1["mean_score"], z1["max_score"], z1["country"]) == (6, 95.0, 95.0, "GTM")
    assert z1["pillar"] == "IV"  # three IV, two I, one missing
    assert z2["members"] == ["G00", "G01", "G10", "G11"] and z2["units"] == 4
    assert z3["members"] == ["G49"] and z3["units"] == 1  # a lone member is a zone of its own
    assert z1["bbox"] == pytest.approx([X0 + 0.6, Y0 + 0.6, X0 + 0.8, Y0 + 0.9])
    assert zone["G77"] == "GTM-Z01" and zone["G00"] == "GTM-Z02" and zone["G49"] == "GTM-Z03"
    assert zone[~members].isna().all()
    assert zone.notna().sum() == members.sum()


def test_zones_area_matches_the_geodesic_area() -> None:
    frame, members = two_blobs()
    _, summary = zones(frame, members, contiguity(frame))
    geod = Geod(ellps="WGS84")
    for _, row in summary.iterrows():
        cells = frame.set_index("key").geometry[row["members"]]
        expected = sum(abs(geod.geometry_area_perimeter(g)[0]) for g in cells) / 1e6
        assert row["area_km2"] == pytest.approx(expected, rel=0.01)
    assert summary.iloc[2]["area_km2"] == pytest.approx(10.7 * 11.1, rel=0.05)  # 0.1° near 15° N


def test_zones_do_not_cross_groups_and_ids_follow_the_prefix() -> None:
    frame, _ = two_blobs()
    frame["country"] = np.where(frame["col"] < 5, "GTM", "HND")
    members = pd.Series(
        frame["row"].between(2, 3).to_numpy() & frame["col"].between(3, 6).to_numpy(), index=frame["key"]
    )
    zone, summary = zones(frame, members, contiguity(frame))
    assert sorted(summary["zone"]) == ["GTM-Z01", "HND-Z01"]
    by_zone = summary.set_index("zone")
    assert by_zone.loc["GTM-Z01", "members"] == ["G23", "G24", "G33", "G34"]
    assert by_zone.loc["HND-Z01", "members"] == ["G25", "G26", "G35", "G36"]
    assert by_zone.loc["HND-Z01", "country"] == "HND"
    assert zone["G24"] != zone["G25"]


def test_zone_ids_are_deterministic() -> None:
    frame, members = two_blobs()
    frame.loc[frame["key"] == "G49", "score"] = 95  # ties on mean score: the larger zone comes first
    zone, summary = zones(frame, members, contiguity(frame))
    assert list(summary["members"].map(len)) == [6, 1, 4]
    shuffled = frame.sample(frac=1, random_state=3)
    zone2, summary2 = zones(shuffled, members.sample(frac=1, random_state=4), contiguity(shuffled))
    pd.testing.assert_series_equal(zone2[zone.index], zone)
    pd.testing.assert_frame_equal(summary2, summary)


@settings(max_examples=40, deadline=None)
@given(
    member_bits=st.lists(st.booleans(), min_size=SIZE * SIZE, max_size=SIZE * SIZE),
    split=st.integers(0, SIZE),
)
def test_zones_partition_the_members(member_bits: list[bool], split: int) -> None:
    frame = ZONE_GRID.copy()
    frame["country"] = np.where(frame["col"] < split, "GTM", "HND")
    members = pd.Series(member_bits, index=frame["key"])
    zone, summary = zones(frame, members, ZONE_W)
    assert summary["units"].sum() == members.sum()
    assert sorted(k for ks in summary["members"] for k in ks) == sorted(members.index[members])
    assert zone.notna().sum() == members.sum()
    countries = frame.set_index("key")["country"]
    for _, row in summary.iterrows():
        assert countries[row["members"]].eq(row["country"]).all()
        assert row["zone"].startswith(row["country"] + "-Z")
        assert (zone[row["members"]] == row["zone"]).all()
    # no two zones of the same country touch: they would be one component
    for a in summary.itertuples():
        touching = {n for k in a.members for n in ZONE_W.neighbors[k]} - set(a.members)
        assert not any(zone[n] is not None and countries[n] == a.country for n in touching)


ZONE_GRID = grid(planted())
ZONE_W = contiguity(ZONE_GRID)


# --- the real municipios -----------------------------------------------------------------------------


def mirror_file(relative: str) -> str:
    """A file in the data mirror, or skip the test when the mirror does not have it."""
    mirror = Settings().data_mirror
    if mirror is None or not (mirror / relative).is_file():
        pytest.skip(f"data mirror without {relative}")
    return str(mirror / relative)


@pytest.fixture(scope="module")
def hnd() -> gpd.GeoDataFrame:
    """The 298 HND municipios, keyed HN + INE DDMM."""
    frame = gpd.read_file(mirror_file("boundaries/hnd-a2sit/HND.geojson"))
    code = frame["adm2_source_code"].str.extract(r"hn_(\d\d)_(\d\d)")
    frame["key"] = "HN" + code[0] + code[1]
    frame["country"] = "HND"
    return frame


@pytest.fixture(scope="module")
def gtm() -> gpd.GeoDataFrame:
    """The 340 GTM municipios (lakes and Belice dropped, geometries repaired), keyed GT + INE code."""
    frame = gpd.read_file(mirror_file("boundaries/gtm-minfin/munis.json")).set_crs("EPSG:4326")
    frame = frame[~frame["id"].astype(int).isin([0, 4000])].copy()  # the lakes and Belice
    frame["geometry"] = shapely.make_valid(frame.geometry.to_numpy())
    frame["key"] = "GT" + frame["id"].astype(int).map("{:04d}".format)
    frame["country"] = "GTM"
    return frame


def test_real_hnd_contiguity(hnd: gpd.GeoDataFrame) -> None:
    assert len(hnd) == 298
    w = contiguity(hnd)
    # Islas de la Bahía is department 11 (HN1101–HN1104); HN06 is Choluteca, on the mainland
    assert sorted(w.islands) == ["HN1102", "HN1104", "HN1703"]  # Guanaja, Utila, Amapala (Gulf of Fonseca)
    assert sorted(w.neighbors["HN1101"]) == ["HN1103"]  # Roatán and José Santos Guardiola share Roatán
    assert sorted(w.neighbors["HN1103"]) == ["HN1101"]
    assert all(w.cardinalities[k] > 0 for k in hnd["key"] if k.startswith("HN06"))
    assert w.n_components == 5  # the mainland, Roatán and the three islands
    print(f"\nHND: mean neighbours {w.mean_neighbors:.2f}")
    assert 4.5 < w.mean_neighbors < 6.5


def test_real_gtm_contiguity(gtm: gpd.GeoDataFrame) -> None:
    assert len(gtm) == 340
    w = contiguity(gtm)
    assert w.islands == []
    assert w.n_components == 1
    print(f"\nGTM: mean neighbours {w.mean_neighbors:.2f}")
    assert 4.5 < w.mean_neighbors < 6.5


@pytest.mark.parametrize("country", ["hnd", "gtm"])
def test_real_boundaries_need_no_tolerance(country: str, request: pytest.FixtureRequest) -> None:
    """Vertex queen finds every pair that touches at all: no slivers or T-junctions to bridge."""
    frame = request.getfixturevalue(country).reset_index(drop=True)
    queen = contiguity(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        touching = libpysal.weights.fuzzy_contiguity(frame, buffering=False)
    keys = frame["key"]
    assert {k: sorted(v) for k, v in queen.neighbors.items()} == {
        keys[i]: sorted(keys[j] for j in v) for i, v in touching.neighbors.items()
    }


def test_real_gtm_hotspots(gtm: gpd.GeoDataFrame) -> None:
    frame = gtm.copy()
    centre = frame.geometry.representative_point()
    noise = np.random.default_rng(5).uniform(0, 20, len(frame))
    frame["score"] = 80 * np.exp(-((centre.x + 90.5) ** 2 + (centre.y - 14.6) ** 2) / 0.3) + noise
    result = hotspots(frame)
    assert result.loc["GT0101", "label"] == "hot"  # Guatemala City, at the planted peak
    assert result.loc["GT1701", "label"] != "hot"  # Flores, Petén: far north
    assert result["label"].isin(["hot", "cold", "not significant"]).all()


# --- hot spots of the score read only what varies within departments ---------------------------------


def test_a_department_block_is_not_a_hot_spot_of_the_local_score() -> None:
    from app.scoring.engine import Matrix, score
    from app.scoring.profile import Profile

    frame = grid(np.zeros((SIZE, SIZE)))
    keys = pd.Index(frame["key"])
    half = SIZE // 2
    dept = pd.Series(
        [f"D{int(r >= half)}{int(c >= half)}" for r, c in zip(frame["row"], frame["col"], strict=True)],
        index=keys,
    )
    values = pd.DataFrame(
        {
            "dept_level": np.where(dept == "D00", 100.0, 0.0),  # one department runs high, as a block
            "local": np.random.default_rng(3).uniform(40, 60, len(keys)),  # municipal noise
        },
        index=keys,
    )
    m = Matrix(values, pd.Series("GTM", index=keys), {"dept_level": 1, "local": 1}, department=dept)
    p = Profile(pillars={"I": [{"code": "dept_level"}], "II": [{"code": "local"}]}, draws=0)
    out = score(m, p)
    frame["local_score"] = out["local_score"].to_numpy()
    in_block = (dept == "D00").to_numpy()
    frame["score"] = out["score"].to_numpy()
    composite = hotspots(frame, "score", permutations=999)
    local = hotspots(frame, "local_score", permutations=999)
    assert (composite["label"].to_numpy()[in_block] == "hot").sum() >= 10  # the block lights up on the score
    assert (local["label"] == "hot").sum() == 0  # but it is no cluster of municipios
    # the local score is the score without the department-constant indicator: changing it changes nothing
    values["dept_level"] = np.where(dept == "D11", 50.0, 0.0)
    again = score(Matrix(values, m.country, m.directions, department=dept), p)
    np.testing.assert_allclose(again["local_score"], out["local_score"])
    # a department's figure standing in for its municipios is department-constant too
    stand_in = pd.DataFrame({"dept_level": True, "local": False}, index=keys)
    values["dept_level"] = np.arange(len(keys), dtype=float)  # varies, but marked as department figures
    fallback = score(Matrix(values, m.country, m.directions, stand_in, department=dept), p)
    np.testing.assert_allclose(fallback["local_score"], out["local_score"])


# --- the vectorised conditional permutation test ------------------------------------------------------


def test_gi_star_pvalues_agree_with_esda_within_monte_carlo_error() -> None:
    """Same statistic, different random streams: each unit's two-sided p-value is within Monte Carlo error
    of twice esda's folded one (9,999 permutations each), and the z-scores are esda's."""
    import esda

    frame = grid(planted(hot=(0, 0), cold=(6, 6)))
    permutations = 9999
    ours = hotspots(frame, group_column=None, permutations=permutations, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        g = esda.G_Local(
            frame["score"].to_numpy(),
            contiguity(frame),
            transform="B",
            permutations=permutations,
            star=True,
            keep_simulations=False,
            n_jobs=1,
            seed=5,
        )
    theirs = np.minimum(1.0, 2 * np.asarray(g.p_sim))
    np.testing.assert_allclose(ours["gi_z"].to_numpy(dtype=float), g.Zs, rtol=0, atol=1e-12)
    # two independent estimates of the same p: difference sd = sqrt(2 p (1 - p) / permutations), doubled
    sd = 2 * np.sqrt(2 * (theirs / 2) * (1 - theirs / 2) / permutations)
    diff = np.abs(ours["p_sim"].to_numpy(dtype=float) - theirs)
    assert (diff <= 4.5 * sd + 4 / (permutations + 1)).all(), diff.max()
    assert abs(float(np.mean(ours["p_sim"].to_numpy(dtype=float) - theirs))) < 0.01  # no drift either way
    assert (ours["label"] == "hot").sum() >= 5 and (ours["label"] == "cold").sum() >= 5


def test_conditional_pvalues_match_a_per_unit_brute_force() -> None:
    """All units at once (one draw matrix, a unit's own draw standing for the last unit) against drawing each
    unit's neighbours afresh from its others, on an irregular graph with ties and varied neighbour counts."""
    from scipy import sparse

    from app.scoring.spatial import _conditional_pvalues

    rng = np.random.default_rng(1)
    n, permutations = 40, 4000
    upper = np.triu(rng.random((n, n)) < 0.12, 1)
    upper[np.arange(n - 1), np.arange(1, n)] = True  # a path, so everyone has a neighbour
    adjacency = sparse.csr_array((upper | upper.T).astype(float))
    y = np.round(rng.gamma(2.0, 10.0, n))  # rounded: ties between permuted and observed sums happen
    ours = _conditional_pvalues(y, adjacency, permutations, np.random.default_rng(2))
    k = np.asarray(adjacency.sum(axis=1)).ravel().astype(int)
    observed = adjacency @ y
    brute = np.empty(n)
    for i in range(n):
        others = np.delete(y, i)
        sums = np.array([rng.choice(others, k[i], replace=False).sum() for _ in range(permutations)])
        larger = int((sums >= observed[i]).sum())
        brute[i] = (min(larger, permutations - larger) + 1) / (permutations + 1)
    sd = np.sqrt(2 * brute * (1 - brute) / permutations)
    assert (np.abs(ours - brute) <= 4.5 * sd + 2 / (permutations + 1)).all()
    assert ((ours >= 1 / (permutations + 1)) & (ours <= 0.5 + 1 / (permutations + 1))).all()


@pytest.mark.parametrize(("n", "k"), [(50, 8), (6, 5)])  # redrawing repeats, and shuffling whole rows
def test_draws_without_replacement_are_uniform_prefixes(n: int, k: int) -> None:
    from scipy import stats

    from app.scoring.spatial import _draws_without_replacement

    draws = _draws_without_replacement(np.random.default_rng(3), n, k, 20_000)
    assert draws.shape == (20_000, k) and draws.min() >= 0 and draws.max() < n
    assert all(len(set(row)) == k for row in draws[:2000].tolist())
    for column in (0, k - 1):  # every position of a row is uniform over [0, n)
        counts = np.bincount(draws[:, column], minlength=n)
        assert stats.chisquare(counts).pvalue > 1e-4


def test_hotspots_take_prebuilt_weights() -> None:
    frame = grid(planted(hot=(0, 0), cold=(6, 6)))
    w = contiguity(frame.sample(frac=1, random_state=1))  # same units, another order
    pd.testing.assert_frame_equal(hotspots(frame, w=w), hotspots(frame))
    with pytest.raises(ValueError, match="do not cover"):
        hotspots(frame, w=contiguity(frame.iloc[:50]))
