"""Priority scoring: normalise → weight → aggregate → tag → uncertainty → hotspots (OECD/JRC Handbook)."""
