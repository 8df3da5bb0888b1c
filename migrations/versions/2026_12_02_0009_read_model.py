"""The read model: one view of a score run's priorities and one of the storm tracks, read by every output.

`priority_items` is the one place the rule for unranked municipios lives: every municipio of a run is
listed, `ranked` says whether it has a priority and `not_ranked_reason` why not; what follows from a
composite score on too little data (score, ranks, rank interval, tier, lead pillars, hot spot, zone, top
indicators) is NULL for an unranked municipio, while the data it does have (pillar sub-scores and ranks,
out-migration, coverage, vintage) stay visible. `/v1/priorities`, the OGC `priorities` collection, the
tiles, the exports and `app.notebook` all select from it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PILLARS = ("I", "II", "III", "IV", "V")


def _ranked(expression: str) -> str:
    return f"CASE WHEN s.ranked THEN {expression} END"


def upgrade() -> None:
    pillar_scores = ",\n            ".join(
        f"round((s.pillar_scores ->> '{p}')::numeric, 2)::float8 AS \"pillar_{p}\"" for p in PILLARS
    )
    pillar_ranks = ",\n            ".join(
        f"(s.pillar_ranks ->> '{p}')::int AS \"pillar_rank_{p}\"" for p in PILLARS
    )
    tops = ",\n            ".join(
        _ranked(f"s.top_indicators -> {i} ->> 'code'") + f" AS top_indicator_{i + 1}" for i in range(3)
    )
    op.execute(f"""
        CREATE VIEW priority_items AS
        SELECT
            s.run_id,
            u.id AS unit_id,
            s.pcode,
            u.name,
            s.country,
            u.parent_pcode AS department_pcode,
            d.name AS department_name,
            s.boundary_set_id AS boundary_set,
            s.ranked,
            s.not_ranked_reason,
            {_ranked("round(s.score::numeric, 2)::float8")} AS score,
            {_ranked("s.rank")} AS rank,
            {_ranked("s.rank_region")} AS rank_region,
            {_ranked("s.rank_lo")} AS rank_lo,
            {_ranked("s.rank_hi")} AS rank_hi,
            {_ranked("s.rank_median")} AS rank_median,
            {_ranked("round(s.p_top::numeric, 3)::float8")} AS p_top,
            {_ranked("s.robust")} AS robust,
            {_ranked("s.tier_stability")} AS tier_stability,
            {_ranked("s.tier::int")} AS tier,
            {_ranked("s.pillar")} AS pillar,
            {_ranked("s.pillar_secondary")} AS pillar_secondary,
            {pillar_scores},
            {pillar_ranks},
            s.pillar_scores,
            s.pillar_ranks,
            round(s.migration::numeric, 2)::float8 AS migration,
            {_ranked("s.hotspot")} AS hotspot,
            {_ranked("s.hotspot_confidence::int")} AS hotspot_confidence,
            {_ranked("s.gi_z")} AS gi_z,
            {_ranked("s.zone")} AS zone,
            round(s.coverage::numeric, 3)::float8 AS coverage,
            round(s.driver_coverage::numeric, 3)::float8 AS driver_coverage,
            CASE WHEN s.ranked THEN s.top_indicators ELSE '[]'::jsonb END AS top_indicators,
            {tops},
            s.vintage,
            u.geom,
            u.geom_simple
        FROM scores s
        JOIN admin_units u ON u.boundary_set_id = s.boundary_set_id AND u.pcode = s.pcode
        LEFT JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode""")
    op.execute("""
        CREATE VIEW storm_tracks AS
        SELECT
            s.storm_id,
            s.name,
            s.year,
            s.start_time,
            s.end_time,
            s.max_wind_kt,
            s.min_pressure_mb,
            s.source_id,
            (SELECT count(*) FROM storm_fixes f WHERE f.storm_id = s.storm_id)::int AS fixes,
            s.track
        FROM storms s""")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS storm_tracks")
    op.execute("DROP VIEW IF EXISTS priority_items")
