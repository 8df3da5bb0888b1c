"""A small in-process memo of read answers that cannot go stale: keyed by the database and by something that
changes whenever the answer may (a score run's id, which is never reused and whose rows never change, or the
data epoch, which every load that writes bumps). Least recently used first out; thread-safe."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from sqlalchemy import Connection, text


class Memo:
    """At most `size` answers; `get` computes and keeps an answer it does not have. Callers must not mutate
    what they get back (it is shared)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, conn: Connection, key: tuple[Hashable, ...], compute: Callable[[], Any]) -> Any:
        full = (conn.engine.url.render_as_string(hide_password=True), *key)
        with self.lock:
            if full in self.entries:
                self.entries.move_to_end(full)
                return self.entries[full]
        value = compute()
        with self.lock:
            self.entries[full] = value
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return value


def data_epoch(conn: Connection) -> int:
    """The data epoch (app.ingest.provenance.bump_epoch): one primary-key read."""
    return int(conn.execute(text("SELECT epoch FROM data_epoch WHERE id = 1")).scalar_one())
