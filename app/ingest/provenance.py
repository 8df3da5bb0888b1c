"""Provenance: which source, which files (sha256), loaded when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text

from app.cache import EPOCH_CHANNEL
from app.sources import Source


def bump_epoch(conn: Connection, reason: str) -> int:
    """Advance the data epoch inside the caller's load transaction (so it commits or rolls back with the
    load) and return the new epoch. Score runs are keyed by it: anything a load writes re-scores. The new epoch
    is also announced on app.cache.EPOCH_CHANNEL, delivered at commit to the serving processes' listeners."""
    epoch = int(
        conn.execute(
            text(
                "UPDATE data_epoch SET epoch = epoch + 1, changed_at = now(), reason = :r WHERE id = 1 RETURNING epoch"
            ),
            {"r": reason[:200]},
        ).scalar_one()
    )
    conn.execute(text("SELECT pg_notify(:ch, :e)"), {"ch": EPOCH_CHANNEL, "e": str(epoch)})
    return epoch


def record_source(conn: Connection, source: Source, now: datetime) -> None:
    """Upsert a source and the hashes of its files, stamped with the load time."""
    conn.execute(
        text("""
            INSERT INTO sources (id, kind, title, publisher, homepage, licence, citation, loaded_at)
            VALUES (:id, :kind, :title, :publisher, :homepage, :licence, :citation, :now)
            ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, title = EXCLUDED.title,
              publisher = EXCLUDED.publisher, homepage = EXCLUDED.homepage, licence = EXCLUDED.licence,
              citation = EXCLUDED.citation, loaded_at = EXCLUDED.loaded_at
        """),
        {
            "id": source.id,
            "kind": source.kind,
            "title": source.title,
            "publisher": source.publisher,
            "homepage": source.homepage,
            "licence": source.licence,
            "citation": source.citation,
            "now": now,
        },
    )
    conn.execute(text("DELETE FROM source_files WHERE source_id = :s"), {"s": source.id})
    conn.execute(
        text(
            "INSERT INTO source_files (source_id, name, sha256, url, loaded_at) "
            "VALUES (:s, :name, :sha, :url, :now)"
        ),
        [{"s": source.id, "name": f.name, "sha": f.sha256, "url": f.url, "now": now} for f in source.files],
    )
