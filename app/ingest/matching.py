"""Matching rows of a user's table to stored units: by P-code, national code, or name within a department."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import Connection, text

from app.errors import InvalidParameter
from app.text import name_key


def units_frame(conn: Connection, set_id: str, level: int = 2) -> pd.DataFrame:
    """Units of a boundary set with their department's P-code, national code and name."""
    rows = (
        conn.execute(
            text("""
            SELECT u.pcode, u.national_code, u.name, u.name_key, u.parent_pcode,
                   d.national_code AS dep_national_code, d.name AS dep_name
            FROM admin_units u
            LEFT JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
            WHERE u.boundary_set_id = :set AND u.level = :level
        """),
            {"set": set_id, "level": level},
        )
        .mappings()
        .all()
    )
    if not rows:
        raise InvalidParameter(
            f"Boundary set '{set_id}' has no units at level {level}: load its boundaries first."
        )
    return pd.DataFrame([dict(r) for r in rows])


def default_set(conn: Connection, country: str) -> str:
    """The current boundary set of a country."""
    found = conn.execute(
        text("SELECT id FROM boundary_sets WHERE country = :c AND is_default"), {"c": country.upper()}
    ).scalar()
    if found is None:
        raise InvalidParameter(f"No boundaries loaded for country '{country}'.")
    return str(found)


@dataclass
class Match:
    """The P-code of each input row (None when unmatched) and what could not be matched."""

    pcodes: list[str | None]
    unmatched: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)


def _department_pcode(value: str, units: pd.DataFrame) -> str | None:
    """A department given as P-code, national code or name → its P-code."""
    deps = units[["parent_pcode", "dep_national_code", "dep_name"]].drop_duplicates()
    v = value.strip()
    for column, key in (("parent_pcode", v.upper()), ("dep_national_code", v.zfill(2))):
        hit = deps[deps[column] == key]
        if len(hit) == 1:
            return str(hit["parent_pcode"].iloc[0])
    hit = deps[deps["dep_name"].map(lambda n: name_key(str(n))) == name_key(v)]
    return str(hit["parent_pcode"].iloc[0]) if len(hit) == 1 else None


def match_rows(
    keys: pd.Series, units: pd.DataFrame, *, by: str, departments: pd.Series | None = None
) -> Match:
    """Match each key to one unit: `by` is 'pcode', 'national_code' or 'name' (case- and accent-insensitive)."""
    if by not in ("pcode", "national_code", "name"):
        raise InvalidParameter("key must be 'pcode', 'national_code' or 'name'.")
    out: list[str | None] = []
    result = Match(out)
    width = int(units["national_code"].str.len().max())
    for i, raw in enumerate(keys.astype(str)):
        label = raw.strip()
        if by == "pcode":
            hit = units[units["pcode"] == label.upper()]
        elif by == "national_code":
            hit = units[units["national_code"] == label.zfill(width)]
        else:
            hit = units[units["name_key"] == name_key(label)]
            if departments is not None:
                dep = str(departments.iloc[i]) if pd.notna(departments.iloc[i]) else ""
                dep_pcode = _department_pcode(dep, units) if dep else None
                if dep and dep_pcode is None:
                    result.unmatched.append(f"{label} (department '{dep}' not found)")
                    out.append(None)
                    continue
                if dep_pcode:
                    hit = hit[hit["parent_pcode"] == dep_pcode]
        if len(hit) == 1:
            out.append(str(hit["pcode"].iloc[0]))
        elif len(hit) == 0:
            result.unmatched.append(label)
            out.append(None)
        else:
            result.ambiguous.append(f"{label} ({', '.join(sorted(hit['pcode']))})")
            out.append(None)
    return result
