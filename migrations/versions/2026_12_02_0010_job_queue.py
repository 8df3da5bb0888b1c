"""The job queue: procrastinate's schema (version 3.10.0, from `migrations/procrastinate/`), and `job_errors`,
the client-safe message of each failed scenario job (procrastinate keeps none).

The schema is a copy of `procrastinate.schema.SchemaManager.get_schema()` of procrastinate 3.10.0, so
migrating gives the same database whatever version is installed; tests/test_jobs.py checks that the
installed procrastinate's schema is still this one. Upgrading procrastinate to a release that changes its
schema takes a new migration applying the SQL files of its `sql/migrations/` since 3.10.0. Its tables,
functions and types all start with `procrastinate_` and are left out of `alembic check` (migrations/env.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from pathlib import Path

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SCHEMA = Path(__file__).resolve().parents[1] / "procrastinate" / "schema-3.10.0.sql"


def upgrade() -> None:
    # straight to psycopg without parameters: the schema's '%' and ':' are SQL, not placeholders
    op.get_bind().connection.driver_connection.execute(SCHEMA.read_text(encoding="utf-8"))
    op.execute("""
        CREATE TABLE job_errors (
            job_id bigint NOT NULL,
            status smallint NOT NULL,
            code text NOT NULL,
            message text NOT NULL,
            failed_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_job_errors PRIMARY KEY (job_id)
        )""")


def downgrade() -> None:
    op.drop_table("job_errors")
    # functions first, with the triggers on procrastinate's tables that call them (CASCADE reaches nothing
    # else: only procrastinate's triggers use them); then the tables, then the types
    op.execute("""
        DO $$
        DECLARE f regprocedure;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
            LOOP
                EXECUTE 'DROP FUNCTION ' || f || ' CASCADE';
            END LOOP;
        END $$;
        DROP TABLE procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs, procrastinate_workers;
        DROP TYPE procrastinate_job_to_defer_v1, procrastinate_job_event_type, procrastinate_job_status;""")
