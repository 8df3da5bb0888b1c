"""The real migrations, from an empty database."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text

from app.db import current_revision, head_revision, upgrade
from tests.conftest import PG


def test_upgrade_from_empty_creates_schema_and_indexes(pg: PG) -> None:
    url = pg.create("mig_from_empty")
    engine = create_engine(url)
    with engine.connect() as conn:
        assert current_revision(conn) is None
    upgrade(url)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision() == "0007"
        assert conn.execute(text("SELECT extname FROM pg_extension WHERE extname = 'postgis'")).scalar()
        tables = set(inspect(conn).get_table_names())
        assert {
            "sources",
            "source_files",
            "boundary_sets",
            "admin_units",
            "crosswalk",
            "indicators",
            "observations",
            "storms",
            "storm_fixes",
            "hazard_events",
            "data_epoch",
        } <= tables
        assert conn.execute(text("SELECT epoch FROM data_epoch")).scalar_one() == 1
        runs = {c["name"] for c in inspect(conn).get_columns("score_runs")}
        assert "fit" in runs
        obs = {c["name"]: c for c in inspect(conn).get_columns("observations")}
        assert obs["value"]["nullable"] and "sample_size" in obs
        gist = (
            conn.execute(
                text(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'admin_units' AND indexdef ILIKE '%USING gist%'"
                )
            )
            .scalars()
            .all()
        )
        assert set(gist) == {"ix_admin_units_geom", "ix_admin_units_geom_simple"}
        assert (
            conn.execute(text("SELECT count(*) FROM pg_indexes WHERE indexdef ILIKE '%USING gist%'")).scalar()
            == 4
        )
        geom_types = dict(
            conn.execute(
                text(
                    "SELECT f_geometry_column, type || ':' || srid FROM geometry_columns WHERE f_table_name = 'admin_units'"
                )
            ).all()
        )
        assert geom_types == {"geom": "MULTIPOLYGON:4326", "geom_simple": "MULTIPOLYGON:4326"}
    upgrade(url)  # a second upgrade is a no-op
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision() == "0007"
    engine.dispose()
    pg.drop("mig_from_empty")


def test_downgrade_then_upgrade(pg: PG) -> None:
    from alembic import command

    from app.db import alembic_config

    url = pg.create("mig_roundtrip")
    upgrade(url)
    command.downgrade(alembic_config(url), "base")  # type: ignore[arg-type]
    engine = create_engine(url)
    with engine.connect() as conn:
        assert "admin_units" not in inspect(conn).get_table_names()
    upgrade(url)
    with engine.connect() as conn:
        assert "admin_units" in inspect(conn).get_table_names()
    engine.dispose()
    pg.drop("mig_roundtrip")
