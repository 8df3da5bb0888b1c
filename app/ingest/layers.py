"""Indicator layers: the catalogue, observations with quality flags, and their atomic store."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, text

from app.db import transaction
from app.errors import DataError
from app.ingest.common import Validation
from app.ingest.provenance import bump_epoch, record_source
from app.ingest.store import LOAD_LOCK
from app.sources import Source

THEMES = ("migration", "I", "II", "III", "IV", "V", "context")
MEASURES = ("count", "rate")

# Quality flags an observation can carry (documented in the README).
OUT_OF_RANGE = "out_of_range"  # outside the indicator's valid range: excluded from scoring
SURVEY_NOT_REPRESENTATIVE = "survey_not_representative_by_municipio"
NO_POPULATION_DENOMINATOR = "no_population_denominator"
PERIOD_UNSTATED = "period_unstated"
SURVEY_ESTIMATE = "survey_estimate"
DERIVED_CROSSWALK = "derived_through_crosswalk"
PARTIAL_COVERAGE = "partial_raster_coverage"
# a unit the source does not list, stored as 0 because the source lists every unit with at least one event
ABSENT_ASSUMED_ZERO = "absent_from_source_assumed_zero"
NOT_EVALUATED = "not_evaluated"  # the source marks the unit as not evaluated: stored as missing (NULL)
SMALL_SAMPLE = "small_sample"  # a survey share whose effective sample is below SMALL_SAMPLE_MIN
INCONSISTENT_POPULATION = "inconsistent_population"  # off the sum of its municipios by more than 50 %
# a department rate computed on the sum of its municipios' populations (its own population is inconsistent)
DENOMINATOR_MUNICIPAL_SUM = "denominator_municipal_population_sum"
KNOWN_FLAGS = (
    OUT_OF_RANGE,
    SURVEY_NOT_REPRESENTATIVE,
    NO_POPULATION_DENOMINATOR,
    PERIOD_UNSTATED,
    SURVEY_ESTIMATE,
    DERIVED_CROSSWALK,
    PARTIAL_COVERAGE,
    ABSENT_ASSUMED_ZERO,
    NOT_EVALUATED,
    SMALL_SAMPLE,
    INCONSISTENT_POPULATION,
    DENOMINATOR_MUNICIPAL_SUM,
)
# Kish effective sample size below which a survey share is flagged small_sample (a share of fewer than 30
# effective respondents has a 95 % margin of error above ±18 points at p = 0.5)
SMALL_SAMPLE_MIN = 30.0
# codes of municipal population indicators, by preference within a country (used as denominators and as
# weights when rates are aggregated through the crosswalk)
POPULATION_CODES = ("population", "population_2018", "population_2014", "population_2007")


@dataclass(frozen=True)
class Indicator:
    """One indicator of the catalogue: what it measures, which way is worse, where it comes from."""

    code: str
    name_en: str
    name_es: str
    unit: str
    theme: str
    direction: int
    measure: str
    source_id: str
    period: str
    valid_min: float | None = None
    valid_max: float | None = None
    column: str = ""
    reason: str = ""
    publisher: str = ""  # who produced the values, when not the carrier of the file (e.g. PNC for crimes)

    def check(self) -> list[str]:
        """Problems with the definition itself (empty when it is sound)."""
        problems = []
        if not self.code or not self.code.replace("_", "").isalnum() or self.code != self.code.lower():
            problems.append(f"indicator code '{self.code}' must be lower-case letters, digits and '_'")
        if self.theme not in THEMES:
            problems.append(f"{self.code}: theme must be one of {', '.join(THEMES)}, got '{self.theme}'")
        if self.direction not in (-1, 1):
            problems.append(f"{self.code}: direction must be 1 (higher is worse) or -1, got {self.direction}")
        if self.measure not in MEASURES:
            problems.append(f"{self.code}: measure must be 'count' or 'rate', got '{self.measure}'")
        if self.valid_min is not None and self.valid_max is not None and self.valid_min > self.valid_max:
            problems.append(f"{self.code}: valid_min exceeds valid_max")
        return problems


def _opt_float(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return float(value)


def load_catalogue(path: Path) -> dict[str, Indicator]:
    """The reviewable mapping of source columns to indicators (`geodata/indicators.csv`)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    out: dict[str, Indicator] = {}
    for row in frame.to_dict("records"):
        ind = Indicator(
            code=row["code"],
            name_en=row["name_en"],
            name_es=row["name_es"],
            unit=row["unit"],
            theme=row["theme"],
            direction=int(row["direction"]),
            measure=row["measure"],
            source_id=row["source_id"],
            period=row["period"],
            valid_min=_opt_float(row["valid_min"]),
            valid_max=_opt_float(row["valid_max"]),
            column=row["column"],
            reason=row["reason"],
            publisher=row.get("publisher", ""),
        )
        problems = ind.check()
        if problems:
            raise DataError(f"Indicator catalogue {path.name}: " + "; ".join(problems))
        out[ind.code] = ind
    return out


@dataclass
class Layer:
    """Observations ready to store: indicator definitions, values keyed by unit, provenance."""

    source: Source
    used: list[tuple[Source, dict[str, Path]]]
    indicators: list[Indicator]
    observations: pd.DataFrame  # indicator_code, boundary_set_id, pcode, period, value, flags, file_sha256
    validation: Validation = field(default_factory=Validation)
    notes: list[str] = field(default_factory=list)
    # more rows to write in the same transaction (the storms behind the hurricane indicators)
    extra: Callable[[Connection, datetime], None] | None = None


OBSERVATION_COLUMNS = [
    "indicator_code",
    "boundary_set_id",
    "pcode",
    "period",
    "value",
    "flags",
    "file_sha256",
    "sample_size",
]


def observations_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A frame with the observation columns, in order. `value` may be None only for a value the source
    marks as missing, and then a flag must say why; `sample_size` (optional) is the effective sample
    behind a survey share."""
    frame = pd.DataFrame(list(rows), columns=OBSERVATION_COLUMNS)
    frame["flags"] = frame["flags"].map(lambda f: list(f) if isinstance(f, (list, tuple)) else [])
    frame["value"] = frame["value"].astype("object").where(frame["value"].notna(), None)
    frame["sample_size"] = frame["sample_size"].astype("object").where(frame["sample_size"].notna(), None)
    return frame


def stored_population(conn: Connection, code: str, set_id: str) -> pd.Series:
    """A municipal population stored by an earlier load, by P-code (empty when it is not loaded)."""
    rows = conn.execute(
        text(
            "SELECT pcode, value FROM observations WHERE indicator_code = :c AND boundary_set_id = :s "
            "AND value IS NOT NULL"
        ),
        {"c": code, "s": set_id},
    ).all()
    return pd.Series({r.pcode: float(r.value) for r in rows}, dtype="float64")


def flag_out_of_range(obs: pd.DataFrame, indicators: Iterable[Indicator]) -> pd.DataFrame:
    """Add the out-of-range flag where a value lies outside its indicator's valid range."""
    ranges = {i.code: (i.valid_min, i.valid_max) for i in indicators}
    flags = []
    for code, value, current in zip(obs["indicator_code"], obs["value"], obs["flags"], strict=True):
        lo, hi = ranges.get(code, (None, None))
        bad = value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi))
        flags.append(sorted({*current, OUT_OF_RANGE}) if bad else list(current))
    out = obs.copy()
    out["flags"] = flags
    return out


@dataclass
class LayerReport:
    """What a layer load stored: values per indicator, how many were flagged, and notes."""

    source_id: str
    status: str
    values: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: indicators, values, flagged values."""
        flagged = sum(n for counts in self.flagged.values() for f, n in counts.items() if f == OUT_OF_RANGE)
        return f"{len(self.values)} indicators, {sum(self.values.values())} values" + (
            f", {flagged} out of range (excluded from scoring)" if flagged else ""
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the report."""
        return {
            "source_id": self.source_id,
            "status": self.status,
            "values": self.values,
            "flagged": self.flagged,
            "notes": self.notes,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


def validate_layer(conn: Connection, layer: Layer) -> Validation:
    """Every unit exists, keys are unique, values are finite, indicators are sound."""
    v = Validation(list(layer.validation.errors), list(layer.validation.warnings))
    for ind in layer.indicators:
        v.errors.extend(ind.check())
    obs = layer.observations
    if obs.empty:
        v.errors.append(f"Source '{layer.source.id}': no values to store.")
        return v
    codes = {i.code for i in layer.indicators}
    stray = set(obs["indicator_code"]) - codes
    if stray:
        v.errors.append(f"values for indicators that are not defined: {sorted(stray)}")
    missing_value = obs["value"].isna()
    finite = obs["value"].map(lambda x: isinstance(x, (int, float)) and math.isfinite(x)) | missing_value
    if not finite.all():
        v.errors.append(f"{int((~finite).sum())} values are not finite numbers (NaN or infinite)")
    unexplained = missing_value & (obs["flags"].map(len) == 0)
    if unexplained.any():
        v.errors.append(f"{int(unexplained.sum())} missing values carry no flag saying why")
    dup = obs.duplicated(["indicator_code", "boundary_set_id", "pcode", "period"])
    if dup.any():
        sample = obs.loc[dup, ["indicator_code", "pcode"]].head(5).to_dict("records")
        v.errors.append(f"{int(dup.sum())} duplicate values for the same unit and period, e.g. {sample}")
    known = set(
        conn.execute(
            text(
                "SELECT boundary_set_id || '/' || pcode FROM admin_units WHERE boundary_set_id = ANY(:sets)"
            ),
            {"sets": sorted(set(obs["boundary_set_id"]))},
        ).scalars()
    )
    keys = obs["boundary_set_id"] + "/" + obs["pcode"]
    missing = sorted(set(keys) - known)
    if missing:
        v.errors.append(
            f"{len(missing)} units are not in the boundary set (load the boundaries first?): {missing[:10]}"
        )
    return v


def indicator_definition(ind: Indicator) -> tuple[Any, ...]:
    """An indicator's catalogue row as stored in `indicators` (the columns `_unchanged` compares)."""
    return (
        ind.code, ind.name_es, ind.name_en, ind.unit, ind.theme, ind.direction, ind.measure, ind.valid_min,
        ind.valid_max, ind.reason, ind.source_id, ind.period, ind.publisher or None,
    )  # fmt: skip


def _value_key(value: Any) -> float | None:
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 9)
    )


def _unchanged(conn: Connection, layer: Layer, obs: pd.DataFrame) -> bool:
    """True only when a write would change nothing: the same file hashes recorded, the same indicator
    definitions (catalogue rows, periods and publishers) and the same values with the same flags. Comparing
    what would be written, not only file hashes, matters where one file feeds several layers (the MVI
    metadata dates the A2SIT layer) or a catalogue row changes."""
    for source, _ in layer.used:
        stored: dict[str, str] = dict(
            conn.execute(
                text("SELECT name, sha256 FROM source_files WHERE source_id = :s"), {"s": source.id}
            ).all()
        )
        if stored != {f.name: f.sha256 for f in source.files}:
            return False
    codes = [i.code for i in layer.indicators]
    defined = {
        tuple(r)
        for r in conn.execute(
            text("""
            SELECT code, name_es, name_en, unit, theme, direction, measure, valid_min, valid_max, description,
                   source_id, period, publisher FROM indicators WHERE code = ANY(:codes)"""),
            {"codes": codes},
        )
    }
    if defined != {indicator_definition(i) for i in layer.indicators}:
        return False
    stored_values = {
        (r.indicator_code, r.boundary_set_id, r.pcode, r.period, _value_key(r.value), tuple(sorted(r.flags)),
         _value_key(r.sample_size))
        for r in conn.execute(
            text("""
            SELECT indicator_code, boundary_set_id, pcode, period, value, flags, sample_size FROM observations
            WHERE indicator_code = ANY(:codes)"""),
            {"codes": codes},
        )
    }  # fmt: skip
    wanted = {
        (r.indicator_code, r.boundary_set_id, r.pcode, r.period, _value_key(r.value), tuple(sorted(r.flags)),
         _value_key(r.sample_size))
        for r in obs.itertuples(index=False)
    }  # fmt: skip
    return len(stored_values) == len(obs) and stored_values == wanted


def store_layer(bind: Engine | Connection, layer: Layer, *, force: bool = False) -> LayerReport:
    """Validate and write a layer in one transaction; a failure leaves the previous data intact."""
    report = LayerReport(layer.source.id, "loaded", notes=list(layer.notes))
    obs = flag_out_of_range(layer.observations, layer.indicators)
    with transaction(bind) as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOAD_LOCK})
        validation = validate_layer(conn, replace(layer, observations=obs))
        if not validation.ok:
            raise DataError(
                f"Source '{layer.source.id}' failed validation; nothing was stored: "
                + "; ".join(validation.errors[:5]),
                validation.errors,
            )
        report.warnings = validation.warnings
        if not force and _unchanged(conn, layer, obs):
            report.status = "unchanged"
        else:
            _write(conn, layer, obs)
            bump_epoch(conn, f"load {layer.source.id}")
    report.values = obs.groupby("indicator_code").size().astype(int).to_dict()
    for code, group in obs.groupby("indicator_code"):
        counts: dict[str, int] = {}
        for flags in group["flags"]:
            for f in flags:
                counts[f] = counts.get(f, 0) + 1
        if counts:
            report.flagged[str(code)] = counts
    return report


def _write(conn: Connection, layer: Layer, obs: pd.DataFrame) -> None:
    now = datetime.now(UTC)
    for source, _ in layer.used:
        record_source(conn, source, now)
    if layer.extra is not None:
        layer.extra(conn, now)
    conn.execute(
        text("""
            INSERT INTO indicators (code, name_es, name_en, unit, theme, direction, measure, valid_min,
                                    valid_max, description, source_id, period, publisher, loaded_at)
            VALUES (:code, :name_es, :name_en, :unit, :theme, :direction, :measure, :valid_min, :valid_max,
                    :reason, :source_id, :period, NULLIF(:publisher, ''), :now)
            ON CONFLICT (code) DO UPDATE SET name_es = EXCLUDED.name_es, name_en = EXCLUDED.name_en,
              unit = EXCLUDED.unit, theme = EXCLUDED.theme, direction = EXCLUDED.direction,
              measure = EXCLUDED.measure, valid_min = EXCLUDED.valid_min, valid_max = EXCLUDED.valid_max,
              description = EXCLUDED.description, source_id = EXCLUDED.source_id, period = EXCLUDED.period,
              publisher = EXCLUDED.publisher, loaded_at = EXCLUDED.loaded_at
        """),
        [{**i.__dict__, "now": now} for i in layer.indicators],
    )
    codes = [i.code for i in layer.indicators]
    conn.execute(text("DELETE FROM observations WHERE indicator_code = ANY(:codes)"), {"codes": codes})
    _copy_observations(conn, layer.source.id, obs, now)


def _copy_observations(conn: Connection, source_id: str, obs: pd.DataFrame, now: datetime) -> None:
    """Write the observations with COPY on the transaction's own connection: a yearly series is tens of
    thousands of rows (hurricane passes per season: 47,200), which row-by-row INSERTs take seconds over."""
    raw = conn.connection.driver_connection
    assert raw is not None  # a live connection inside the transaction
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY observations (indicator_code, boundary_set_id, pcode, period, value, source_id, file_sha256, "
            "flags, sample_size, loaded_at) FROM STDIN"
        ) as copy,
    ):
        for r in obs.itertuples(index=False):
            copy.write_row(
                (
                    r.indicator_code,
                    r.boundary_set_id,
                    r.pcode,
                    r.period,
                    None if r.value is None or pd.isna(r.value) else float(r.value),
                    source_id,
                    r.file_sha256,
                    list(r.flags),
                    None if r.sample_size is None or pd.isna(r.sample_size) else float(r.sample_size),
                    now,
                )
            )
