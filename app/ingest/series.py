"""Indicators with a time dimension (one value per unit and year) and the trends derived from them.

They are declared here, in code, rather than in `geodata/indicators.csv`: that table maps the columns of
the mirrored files one to one, while these are built by the loaders (a year of departure, a season, a
year of record) and by `app.trends`. Each series has its own code, so the indicators that existed before
(one value per unit) and the profiles that use them are unchanged.

Periods are text that sorts chronologically: a single year 'YYYY' for a value of that year, 'YYYY-YYYY'
for a span (the trend's window). Reads that take "the latest period" take the greatest text.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from app.ingest.layers import Indicator
from app.trends import ALPHA, MIN_PERIODS, unit_trends

# --- El Salvador, census 2024: emigrants by year of departure ----------------------------------------------

SLV_FIRST_YEAR, SLV_LAST_YEAR = 2014, 2024
# The census was taken during 2024, so departures of 2024 are counted for part of the year only (12,529
# against 34,168 in 2023): that year is stored, flagged PARTIAL_YEAR, and left out of the trend window.
SLV_TREND_WINDOW = (2014, 2023)
PARTIAL_YEAR = "partial_year"  # the period was still running when the source was collected

_SLV_WINDOW = f"{SLV_TREND_WINDOW[0]}-{SLV_TREND_WINDOW[1]}"
_METHOD = (
    f"Theil-Sen slope over {_SLV_WINDOW} (median of pairwise slopes, on the real years) with a two-sided "
    f"Mann-Kendall test (Kendall's tau of year and value; scipy); significant when p < {ALPHA}; at least "
    f"{MIN_PERIODS} observed years, else no value (flag too_few_periods). 2024 is left out: the census was "
    "taken during 2024, so its departures cover part of the year only. No correction for multiple testing."
)

SLV_EMIGRANTS_YEAR = Indicator(
    code="slv_emigrants_year",
    name_en="Emigrants by year of departure",
    name_es="Emigrantes por año de salida",
    unit="persons who left in the year (reported by households)",
    theme="migration",
    direction=1,
    measure="count",
    source_id="slv-censo2024",
    period=f"{SLV_FIRST_YEAR}-{SLV_LAST_YEAR}",
    valid_min=0,
    column="emigration detail: sum of emigrants by municdesc and year_departure (2014-2024)",
    reason=(
        "Out-migration over time, one period per year of departure. 2024 is flagged partial_year: the "
        "census was taken during 2024. A household census counts only emigrants still abroad whose "
        "household stayed: the further back the year, the more departures it may miss (returns, whole "
        "households gone), which can make a series rise that did not."
    ),
)
SLV_EMIGRANTS_PER_1000_YEAR = Indicator(
    code="slv_emigrants_per_1000_year",
    name_en="Emigrants by year of departure per 1000 residents",
    name_es="Emigrantes por año de salida por 1.000 residentes",
    unit="emigrants who left in the year per 1000 residents (2024 census population)",
    theme="migration",
    direction=1,
    measure="rate",
    source_id="slv-censo2024",
    period=f"{SLV_FIRST_YEAR}-{SLV_LAST_YEAR}",
    valid_min=0,
    valid_max=1000,
    column="emigrants by year_departure / poblacion_total * 1000",
    reason=(
        "Yearly out-migration rate; the denominator is the 2024 census population for every year (no "
        "yearly municipal population is published). 2024 is flagged partial_year."
    ),
)
SLV_EMIGRANTS_PER_1000_TREND = Indicator(
    code="slv_emigrants_per_1000_trend",
    name_en=f"Change in emigrants per 1000 residents per year, {_SLV_WINDOW}",
    name_es=f"Cambio anual de emigrantes por 1.000 residentes, {_SLV_WINDOW}",
    unit="emigrants per 1000 residents, change per year",
    theme="migration",
    direction=1,
    measure="rate",
    source_id="slv-censo2024",
    period=_SLV_WINDOW,
    column=f"trend of slv_emigrants_per_1000_year over {_SLV_WINDOW}",
    reason=f"Rising out-migration is where the strategy's outcome worsens. {_METHOD}",
)
SLV_EMIGRANTS_PER_1000_TREND_P = Indicator(
    code="slv_emigrants_per_1000_trend_p",
    name_en=f"Mann-Kendall p-value of the emigration trend, {_SLV_WINDOW}",
    name_es=f"Valor p de Mann-Kendall de la tendencia de emigración, {_SLV_WINDOW}",
    unit="p-value (two-sided)",
    theme="context",
    direction=-1,
    measure="rate",
    source_id="slv-censo2024",
    period=_SLV_WINDOW,
    valid_min=0,
    valid_max=1,
    column=f"Mann-Kendall test of slv_emigrants_per_1000_year over {_SLV_WINDOW}",
    reason=(
        "How sure the trend beside it is (smaller: stronger evidence of a monotonic change either way); "
        f"context, not a severity. {_METHOD}"
    ),
)

# --- Guatemala, DesInventar: hydro-meteorological events per year -----------------------------------------

GTM_EVENTS_YEAR = Indicator(
    code="hydromet_events_year",
    name_en="Hydro-meteorological disasters recorded in the year",
    name_es="Desastres hidrometeorológicos registrados en el año",
    unit="events recorded in the year",
    theme="I",
    direction=1,
    measure="count",
    source_id="gtm-desinventar",
    period="1988-2015",
    valid_min=0,
    column="distinct (municipio, Evento, Fecha) of FLOOD, LANDSLIDE, RAIN, SPATE, STORM, DROUGHT per year",
    reason=(
        "The yearly series behind hydromet_events_per_year (same events, same matching). A year with no "
        "record is stored as 0 flagged absent_from_source_assumed_zero; undated records without a year are "
        "left out. Recording effort changed over the period (many records per event from 2014), so a trend "
        "here would partly measure reporting: none is derived."
    ),
    publisher="DesInventar (desinventar.net)",
)

# --- Atlantic hurricanes (HURDAT2): passes per season -------------------------------------------------------

HURRICANES_SEASON = Indicator(
    code="hurricanes_within_100km_season",
    name_en="Hurricanes passing within 100 km in the season",
    name_es="Huracanes a menos de 100 km en la temporada",
    unit="storms in the season",
    theme="I",
    direction=1,
    measure="rate",
    source_id="hurdat2-dplyr",
    period="1975-2024",
    valid_min=0,
    column="storms whose hurricane-strength track (64 kt or more) passed within 100 km, by season (year)",
    reason=(
        "The seasonal series behind hurricanes_within_100km (their sum over 1975-2024). HURDAT2 is the "
        "complete record of Atlantic storms, so a season with none near is a measured 0."
    ),
)

SERIES_INDICATORS: dict[str, Indicator] = {
    i.code: i
    for i in (
        SLV_EMIGRANTS_YEAR,
        SLV_EMIGRANTS_PER_1000_YEAR,
        SLV_EMIGRANTS_PER_1000_TREND,
        SLV_EMIGRANTS_PER_1000_TREND_P,
        GTM_EVENTS_YEAR,
        HURRICANES_SEASON,
    )
}


def trend_rows(
    series: pd.DataFrame,
    window: tuple[int, int],
    slope: Indicator,
    p_value: Indicator,
    sha: str,
) -> list[dict[str, Any]]:
    """Observation rows of a trend and its p-value for every unit of a series (rows with boundary_set_id,
    pcode, period, value): the slope per year, or missing with the flag too_few_periods."""
    rows: list[dict[str, Any]] = []
    for t in unit_trends(series, window).itertuples(index=False):
        base = {"boundary_set_id": t.boundary_set_id, "pcode": t.pcode, "file_sha256": sha}
        rows.append(
            {**base, "indicator_code": slope.code, "period": slope.period, "value": t.slope, "flags": t.flags}
        )
        if t.p_value is not None:
            rows.append(
                {
                    **base,
                    "indicator_code": p_value.code,
                    "period": p_value.period,
                    "value": t.p_value,
                    "flags": [],
                }
            )
    return rows
