"""Coordinate reference systems of the OGC API (Part 2): OGC URIs, SRIDs and axis order."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InvalidParameter

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


@dataclass(frozen=True)
class Crs:
    """A CRS the service serves: its URI, its SRID, and whether its first axis is latitude."""

    uri: str
    srid: int
    lat_first: bool = False
    decimals: int = 6


SUPPORTED = {
    c.uri: c
    for c in (
        Crs(CRS84, 4326),
        Crs("http://www.opengis.net/def/crs/EPSG/0/4326", 4326, lat_first=True),
        Crs("http://www.opengis.net/def/crs/EPSG/0/3857", 3857, decimals=2),
        Crs("http://www.opengis.net/def/crs/EPSG/0/32615", 32615, decimals=2),
        Crs("http://www.opengis.net/def/crs/EPSG/0/32616", 32616, decimals=2),
    )
}
STORAGE = SUPPORTED[CRS84]


def parse(value: str | None, what: str = "crs") -> Crs:
    """The CRS named by a URI (or a short form such as EPSG:32616); 400 for one the service does not serve."""
    if value is None or value.strip() == "":
        return STORAGE
    v = value.strip().strip("[]")
    if v.upper() in ("CRS84", "OGC:CRS84"):
        return STORAGE
    if v.upper().startswith("EPSG:"):
        v = f"http://www.opengis.net/def/crs/EPSG/0/{v.split(':', 1)[1]}"
    v = v.replace("https://", "http://")
    if v in SUPPORTED:
        return SUPPORTED[v]
    raise InvalidParameter(f"{what} '{value}' is not supported; use one of: {', '.join(SUPPORTED)}.")
