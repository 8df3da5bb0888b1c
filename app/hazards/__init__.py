"""Hazards: HURDAT2 track parsers and a parametric wind-field model (pure functions), and the read query of
disaster event records (`events`)."""
