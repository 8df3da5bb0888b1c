"""The planners' map page at /map (placeholder: filled in by the map work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["map"], include_in_schema=False)
