"""Alembic environment: runs the project's migrations online against sqlalchemy.url.

`target_metadata` is app.models.metadata, the one declaration of every table, so autogenerate (and
`alembic check`, run by tests/test_migrations.py) compares the migrated database with it: column types,
server defaults, nullability, keys, unique constraints and indexes. GeoAlchemy2's helpers render and
rewrite geometry operations; PostGIS's own tables (spatial_ref_sys, and anything in other schemas such
as topology or tiger) are not ours and are left out.

Nor are the job queue's: migration 0010 applies procrastinate's schema as procrastinate ships it (app/jobs.py
uses it), and every table, index, function and type in it is named `procrastinate_*` (a few indexes
`idx_procrastinate_*`, which go with their tables). Those are procrastinate's to define, so they are
left out of the comparison here, and of the catalogue comparison in tests/test_migrations.py.
"""

from typing import Any

from alembic import context
from geoalchemy2 import alembic_helpers
from sqlalchemy import create_engine, pool

from app.models import metadata

config = context.config


PROCRASTINATE = "procrastinate_"  # the prefix of the job queue's objects (procrastinate's, not ours)


def include_object(obj: Any, name: str | None, obj_type: str, reflected: bool, compare_to: Any) -> bool:
    """Compare only the project's objects: GeoAlchemy2's filter drops the spatial extension's tables, the
    prefix drops procrastinate's (their indexes and constraints go with them)."""
    if obj_type == "table" and (name or "").startswith(PROCRASTINATE):
        return False
    return bool(alembic_helpers.include_object(obj, name, obj_type, reflected, compare_to))


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Reflect only the default schema (PostGIS extensions such as topology live in schemas of their own)."""
    return type_ != "schema" or name is None


def run_migrations_online() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            compare_type=True,
            compare_server_default=True,
            include_object=include_object,
            include_name=include_name,
            process_revision_directives=alembic_helpers.writer,
            render_item=alembic_helpers.render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
