"""Baselines: a named, frozen score run (profile, data epoch, run) to compare later runs with, and the
indicator values each unit was scored on at that time (they may be gone after a reload).

The run is referenced with ON DELETE RESTRICT: while a baseline points at it, no pruning can remove it
(app.scoring.service.prune_scenarios leaves such runs alone).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE baselines (
            id serial NOT NULL,
            name text NOT NULL,
            description text NOT NULL DEFAULT '',
            profile_id text NOT NULL,
            profile_hash varchar(16) NOT NULL,
            profile jsonb NOT NULL,
            data_version varchar(32) NOT NULL,
            epoch bigint NOT NULL,
            run_id integer NOT NULL,
            sets text[] NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_baselines PRIMARY KEY (id),
            CONSTRAINT uq_baselines_name UNIQUE (name),
            CONSTRAINT fk_baselines_run FOREIGN KEY (run_id) REFERENCES score_runs (id) ON DELETE RESTRICT
        )""")
    op.execute("CREATE INDEX ix_baselines_run ON baselines (run_id)")
    op.execute("""
        CREATE TABLE baseline_values (
            baseline_id integer NOT NULL,
            boundary_set_id text NOT NULL,
            pcode text NOT NULL,
            indicators jsonb NOT NULL,
            CONSTRAINT pk_baseline_values PRIMARY KEY (baseline_id, boundary_set_id, pcode),
            CONSTRAINT fk_baseline_values_baseline FOREIGN KEY (baseline_id) REFERENCES baselines (id)
                ON DELETE CASCADE
        )""")


def downgrade() -> None:
    op.drop_table("baseline_values")
    op.drop_table("baselines")
