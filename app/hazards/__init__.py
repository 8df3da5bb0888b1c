"""Hurricane hazard: HURDAT2 track parsers and a parametric wind-field model (pure functions, no database)."""
