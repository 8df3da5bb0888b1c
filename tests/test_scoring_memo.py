"""What a scenario reuses: the weight-free memo and the exact rewrites of scipy and numpy summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from app.scoring.engine import Matrix, WeightFree, _tie_ranks, normalised, score
from app.scoring.profile import Profile
from app.scoring.service import _json, _json_each
from app.scoring.uncertainty import rank_uncertainty, summarise


def synthetic(n: int = 120, k: int = 12, seed: int = 3) -> tuple[Matrix, Profile]:
    """A random matrix over three countries with departments and department figures standing in."""
    rng = np.random.default_rng(seed)
    values = rng.lognormal(size=(n, k))
    values[rng.random((n, k)) < 0.15] = np.nan
    codes = [f"x{j:02d}" for j in range(k)]
    index = pd.Index([f"u{i}" for i in range(n)])
    frame = pd.DataFrame(values, index=index, columns=codes)
    country = pd.Series(rng.choice(["GTM", "SLV", "HND"], n), index=index)
    department = country + "-" + pd.Series(rng.integers(0, 4, n).astype(str), index=index)
    fallback = pd.DataFrame(rng.random((n, k)) < 0.05, index=index, columns=codes)
    directions = {c: 1 if j % 3 else -1 for j, c in enumerate(codes)}
    norms = ["minmax", "rank", "zscore"]
    items = [{"code": c, "weight": 1 + j % 3, "normalise": norms[j % 3]} for j, c in enumerate(codes)]
    parts = np.array_split(np.arange(k), 6)
    profile = Profile(
        migration=[items[j] for j in parts[0]],
        pillars={
            p: [items[j] for j in g] for p, g in zip(("I", "II", "III", "IV", "V"), parts[1:], strict=True)
        },
        draws=150,
    )
    return Matrix(frame, country, directions, fallback, department=department), profile


def _run(matrix: Matrix, profile: Profile) -> tuple[pd.DataFrame, pd.DataFrame]:
    nominal = score(matrix, profile)
    return nominal, rank_uncertainty(matrix, profile, nominal)


@pytest.mark.parametrize(
    "change",
    [
        {"migration_weight": 0.3},
        {"pillar_weights": {"I": 2.0, "II": 1.0, "III": 0.5, "IV": 1.0, "V": 1.0}},
        {"missing": "country_median"},
        {"aggregation_within": "geometric"},
        {"scope": "region"},
    ],
)
def test_a_warm_memo_gives_what_a_fresh_matrix_gives(change: dict[str, object]) -> None:
    matrix, profile = synthetic()
    matrix.memo = WeightFree()
    _run(matrix, profile)  # fills the memo under the first profile's treatment
    moved = profile.model_copy(update=change)
    warm = _run(matrix, moved)
    fresh_matrix, _ = synthetic()
    fresh = _run(fresh_matrix, moved)
    for a, b in zip(warm, fresh, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_a_changed_treatment_is_not_served_from_the_memo() -> None:
    matrix, profile = synthetic()
    matrix.memo = WeightFree()
    before = normalised(matrix, profile).copy()
    items = [i.model_copy(update={"normalise": "minmax"}) for i in profile.migration]
    after = normalised(matrix, profile.model_copy(update={"migration": items}))
    assert not np.array_equal(before, after, equal_nan=True)


def test_memo_arrays_are_read_only_and_bounded() -> None:
    matrix, profile = synthetic()
    matrix.memo = WeightFree(max_bytes=3 * 120 * 12 * 8, max_entries=2)
    x = normalised(matrix, profile)
    with pytest.raises(ValueError):
        x[0, 0] = 1.0
    for how in ("shrink", "country_median", "reweight"):
        normalised(matrix, profile, missing=how)
    assert len(matrix.memo._entries) <= 2 and matrix.memo._bytes <= matrix.memo.max_bytes


def test_tie_ranks_are_scipys() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        v = np.round(rng.random(int(rng.integers(1, 40))) * 3, int(rng.integers(0, 2)))
        up, down = _tie_ranks(v)
        assert np.array_equal(up, rankdata(v, method="average"))
        assert np.array_equal(down, rankdata(-v, method="min"))


@pytest.mark.parametrize("draws", [1, 2, 7, 20, 99, 100, 101])
def test_rank_summaries_are_numpys(draws: int) -> None:
    rng = np.random.default_rng(draws)
    ranks = rng.integers(1, 30, (25, draws)).astype(np.int32)
    nominal = pd.DataFrame({"tier": np.ones(25, dtype=np.int64)}, index=[f"u{i}" for i in range(25)])
    out = summarise(
        ranks,
        nominal,
        np.ones(25, dtype=bool),
        np.zeros(25, dtype=np.int64),
        Profile(migration=[{"code": "a"}]),
    )
    assert np.array_equal(out["rank_median"].to_numpy(), np.median(ranks, axis=1))
    assert np.array_equal(
        out["rank_lo"].to_numpy(dtype=np.int64), np.quantile(ranks, 0.05, axis=1, method="lower")
    )
    assert np.array_equal(
        out["rank_hi"].to_numpy(dtype=np.int64), np.quantile(ranks, 0.95, axis=1, method="higher")
    )


def test_json_columns_split_as_each_item_serialises() -> None:
    objects = [{"I": 1.5, "II": None, "III": float("nan")}, {"I": 2}, {}]
    lists = [
        [],
        [{"code": "a_b", "value": 1e-300, "contribution": float("inf")}],
        [{"code": "c"}, {"code": "d"}],
    ]
    assert _json_each(objects, "{}") == [_json(v) for v in objects]
    assert _json_each(lists, "[]") == [_json(v) for v in lists]
    assert _json_each([{"s": "},{"}, {"s": "x"}], "{}") == [_json({"s": "},{"}), _json({"s": "x"})]
    assert _json_each([], "[]") == []
