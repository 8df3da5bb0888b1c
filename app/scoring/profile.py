"""Scoring profiles: versioned, validated, hashed by their canonical JSON.

A profile says which indicators weigh into priority and how (OECD/JRC Handbook on Constructing Composite
Indicators, 2008; COINr as the reference for each step):
- out-migration (`migration`) is the outcome the strategy targets; the five pillars are its drivers;
- score = migration_weight × migration + (1 − migration_weight) × drivers, each on 0–1, reported 0–100;
- within a component, indicators are aggregated with their weights, re-weighted over the indicators a
  municipio has (a missing value is never a zero);
- a municipio is ranked only when the share of the component weights it has data for reaches
  `min_coverage`.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Pillar = Literal["I", "II", "III", "IV", "V"]
PILLARS: tuple[Pillar, ...] = ("I", "II", "III", "IV", "V")
Normaliser = Literal["minmax", "zscore", "rank", "goalposts"]
Outliers = Literal["none", "winsorise", "log"]
Aggregation = Literal["arithmetic", "geometric"]
Missing = Literal["reweight", "country_median", "shrink"]
SmallSamples = Literal["shrink", "drop", "keep"]


class IndicatorWeight(BaseModel):
    """One indicator in a profile: its weight and how it is treated before aggregation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=1, max_length=80, pattern=r"^[a-z0-9_]+$")
    weight: float = Field(1.0, ge=0, le=1000, allow_inf_nan=False)
    normalise: Normaliser = "minmax"
    goalposts: tuple[float, float] | None = Field(
        None, description="(value scored 0, value scored 1) for normalise='goalposts', before direction"
    )
    outliers: Outliers = "none"
    winsor_fraction: float = Field(0.05, ge=0, lt=0.5, description="share cut at each tail by 'winsorise'")
    direction: Literal[1, -1] | None = Field(
        None, description="override the catalogue: 1 when higher is worse"
    )

    @model_validator(mode="after")
    def _goalposts(self) -> IndicatorWeight:
        if self.normalise == "goalposts":
            if self.goalposts is None:
                raise ValueError(f"{self.code}: normalise 'goalposts' needs goalposts (low, high)")
            if self.goalposts[0] == self.goalposts[1]:
                raise ValueError(f"{self.code}: goalposts must differ")
        return self


class Empirical(BaseModel):
    """An empirical profile: out-migration modelled on the drivers per country (`app.scoring.empirical`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blend: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of observed out-migration in the score; the rest is the migration the drivers predict",
    )
    l1_ratios: tuple[float, ...] = Field(
        (0.5, 1.0), min_length=1, description="elastic-net mixing values tried (1 = lasso)"
    )
    min_units: int = Field(
        30, ge=5, le=100000, description="fewer units with an outcome: the country is not fitted"
    )
    min_departments: int = Field(
        5, ge=3, le=1000, description="fewer departments with an outcome: not fitted"
    )

    @field_validator("l1_ratios")
    @classmethod
    def _ratios(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < r <= 1 for r in value):
            raise ValueError("l1_ratios must lie in (0, 1]")
        return value


class Profile(BaseModel):
    """A scoring methodology: indicators, weights, normalisation, aggregation, scope, coverage and tiers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field("custom", min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: int = Field(1, ge=1)
    title: str = ""
    description: str = ""
    migration: list[IndicatorWeight] = Field(default_factory=list)
    pillars: dict[Pillar, list[IndicatorWeight]] = Field(default_factory=dict)
    pillar_weights: dict[Pillar, float] = Field(default_factory=lambda: dict.fromkeys(PILLARS, 1.0))
    migration_weight: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)
    aggregation_within: Aggregation = "arithmetic"
    aggregation_across: Aggregation = "arithmetic"
    scope: Literal["country", "region"] = "country"
    min_coverage: float = Field(0.5, ge=0, le=1)
    missing: Missing = Field(
        "shrink",
        description="a unit's missing value of an indicator its country has: 'shrink' scores it as the least "
        "severe (0 after normalisation), so the component is shrunk towards 0 by the share of weight "
        "without data and missing data never raises a score; 'country_median' imputes the country median; "
        "'reweight' re-normalises the weights over the indicators the unit has",
    )
    small_samples: SmallSamples = Field(
        "shrink",
        description="survey values flagged small_sample: 'shrink' towards their department (empirical Bayes, "
        "app.scoring.survey), 'drop' (then missing), or 'keep' as published",
    )
    min_driver_coverage: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a unit is ranked only if at least this share of its country's driver (pillar) weight has "
        "municipal data (department figures standing in for municipios do not count)",
    )
    tier_cutoffs: list[float] = Field(
        default_factory=lambda: [0.2, 0.5],
        description="cumulative shares of ranked municipios: the top 20 % are tier 1, the next to 50 % tier 2, "
        "the rest tier 3",
    )
    draws: int = Field(1000, ge=0, le=20000, description="Monte Carlo draws for rank uncertainty")
    seed: int = 2021
    dirichlet_concentration: float = Field(
        50.0, gt=0, description="Dirichlet concentration around the profile's weights (higher: tighter)"
    )
    top_k: int = Field(10, ge=1, description="p_top is the probability of ranking in the top k of the scope")
    empirical: Empirical | None = Field(
        None,
        description="fit the drivers to observed out-migration instead of weighting them (migration = the "
        "outcome, pillars = the drivers; weights are then not used)",
    )

    @field_validator("pillar_weights")
    @classmethod
    def _weights(cls, value: dict[Pillar, float]) -> dict[Pillar, float]:
        for p, w in value.items():
            if not (w >= 0) or w != w or w in (float("inf"),):
                raise ValueError(f"pillar weight {p} must be a finite number ≥ 0, got {w}")
        return value

    @field_validator("tier_cutoffs")
    @classmethod
    def _cutoffs(cls, value: list[float]) -> list[float]:
        if any(not 0 < c < 1 for c in value) or value != sorted(value) or len(set(value)) != len(value):
            raise ValueError(
                "tier_cutoffs must be increasing shares strictly between 0 and 1, e.g. [0.2, 0.5]"
            )
        return value

    @model_validator(mode="after")
    def _sound(self) -> Profile:
        if not self.migration and not any(self.pillars.values()):
            raise ValueError("a profile needs at least one indicator")
        for p, items in self.pillars.items():
            if not items:
                raise ValueError(f"pillar {p} is empty: list its indicators or leave it out")
            if sum(i.weight for i in items) <= 0:
                raise ValueError(f"pillar {p}: its indicator weights sum to zero")
        if self.migration and sum(i.weight for i in self.migration) <= 0:
            raise ValueError("migration: its indicator weights sum to zero")
        codes = [i.code for i in self.indicators()]
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            raise ValueError(f"indicators listed twice: {dup}")
        if self.empirical is not None and not (self.migration and self.pillars):
            raise ValueError(
                "an empirical profile needs migration indicators (the outcome) and pillars (drivers)"
            )
        if self.pillars and sum(self.pillar_weights.get(p, 0.0) for p in self.pillars) <= 0:
            raise ValueError("the pillar weights of the listed pillars sum to zero")
        return self

    def indicators(self) -> list[IndicatorWeight]:
        """Every indicator of the profile, migration first, then pillars I–V."""
        return [*self.migration, *(i for p in PILLARS for i in self.pillars.get(p, []))]

    def component_of(self) -> dict[str, str]:
        """Indicator code → 'migration' or its pillar."""
        out = {i.code: "migration" for i in self.migration}
        out.update({i.code: p for p in PILLARS for i in self.pillars.get(p, [])})
        return out

    def canonical_json(self) -> bytes:
        """The methodology as canonical JSON (sorted keys; title and description left out)."""
        data = self.model_dump(mode="json", exclude={"title", "description"})
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)

    def hash(self) -> str:
        """A stable hash of the methodology: the same spec gives the same hash, whatever its layout."""
        return hashlib.sha256(self.canonical_json()).hexdigest()[:16]
