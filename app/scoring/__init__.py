"""Priority scoring: normalise → weight → aggregate → tag → uncertainty → hotspots (OECD/JRC Handbook)."""

# The scoring method's version: part of every run's key beside the data epoch, so that a change of the scoring
# code that changes results re-scores stored runs (bump it with such a change).
METHOD_VERSION = "2026-12-02.1"
