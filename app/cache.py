"""In-process memory of read answers that cannot go stale, and of the data epoch they are keyed by.

`Memo` keeps answers keyed by the database and by something that changes whenever the answer may (a score
run's id, which is never reused and whose rows never change, or the data epoch, which every load that writes
bumps). Least recently used first out; thread-safe.

`EpochWatch` keeps the data epoch of one database in memory while an app serves it, so that a request needs
no round trip to learn it. `bump_epoch` (app.ingest.provenance) sends a NOTIFY on `EPOCH_CHANNEL` in the
load's transaction; PostgreSQL delivers it at commit, and a listening thread per process (one connection)
sets the new epoch. In this process a bump is also seen directly: from the statement that bumps until its
connection goes back to the pool, `data_epoch` reads the table (so a load followed by a read in the same
process sees the change at once, without waiting for the notification). The thread also reads the epoch every
`poll_s` seconds (1 s), which bounds how long a change made without a notification (an UPDATE by hand) goes unseen;
while it is not connected every `data_epoch` reads the table, as without a watch."""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.pool import Pool

log = logging.getLogger(__name__)

EPOCH_CHANNEL = "raices_data_epoch"
_EPOCH_SQL = "SELECT epoch FROM data_epoch WHERE id = 1"
_BUMP_MARK = "raices_epoch_bump"  # in a pooled connection's info while it holds an uncommitted bump

_KEYS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def database_key(engine: Engine) -> str:
    """The engine's database, as the memos key it (its URL without the password)."""
    key = _KEYS.get(engine)
    if key is None:
        key = _KEYS[engine] = engine.url.render_as_string(hide_password=True)
    return key


_SCOPES: weakref.WeakKeyDictionary[Engine, dict[str, tuple[Hashable, dict[Any, Any]]]] = (
    weakref.WeakKeyDictionary()
)
_SCOPES_LOCK = threading.Lock()


def epoch_scope(engine: Engine, name: str, version: Hashable) -> dict[Any, Any]:
    """The dict in which `name` (a module's memo) keeps what it derives from this database at this data
    version: the data epoch (`data_epoch`), or `app.scoring.data.data_version`, which also names the
    scoring method. A new version starts an empty dict and drops the previous version's, so nothing kept
    outlives the data it was read from. Callers must not modify the values they read from it."""
    with _SCOPES_LOCK:
        scopes = _SCOPES.setdefault(engine, {})
        held = scopes.get(name)
        if held is None or held[0] != version:
            held = scopes[name] = (version, {})
        return held[1]


class Memo:
    """At most `size` answers; `get` computes and keeps an answer it does not have. Callers must not mutate
    what they get back (it is shared)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, conn: Connection, key: tuple[Hashable, ...], compute: Callable[[], Any]) -> Any:
        full = (database_key(conn.engine), *key)
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


class EpochWatch:
    """The data epoch of one database, kept in memory by a listening thread (see the module's docstring)."""

    def __init__(self, engine: Engine, poll_s: float = 1.0) -> None:
        self.engine = engine
        self.key = database_key(engine)
        self.poll_s = poll_s
        self.lock = threading.Lock()
        self.epoch: int | None = None  # None: not known, read the table
        self.generation = 0  # moves whenever the known epoch is dropped or replaced
        self.pending = 0  # this process's bumps not yet back in the pool
        self.changed_at = -math.inf  # monotonic time a new epoch was first known (not the first one read)
        self.last: int | None = None  # the last epoch known, kept while `epoch` is dropped
        self.users = 0
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    # --- what readers see --------------------------------------------------------------------------------

    def current(self) -> tuple[int | None, int]:
        """The epoch (None when it must be read from the table) and the generation it belongs to."""
        with self.lock:
            return (None if self.pending else self.epoch), self.generation

    def _known(self, epoch: int) -> None:
        """Keep `epoch` as the epoch (the lock held)."""
        if self.last is not None and epoch != self.last:
            self.changed_at = time.monotonic()
        self.last = self.epoch = epoch

    def store(self, epoch: int, generation: int) -> None:
        """An epoch read from the table by a request that saw `generation` before reading: kept unless
        something moved meanwhile or a bump of this process is still open."""
        with self.lock:
            if generation == self.generation and not self.pending and self.epoch is None:
                self._known(epoch)

    def _set(self, epoch: int | None) -> None:
        with self.lock:
            self.generation += 1
            if epoch is None:
                self.epoch = None
            else:
                self._known(epoch)

    def bump_started(self) -> None:
        with self.lock:
            self.pending += 1
            self.generation += 1
            self.epoch = None

    def bump_ended(self) -> None:
        with self.lock:
            self.pending = max(0, self.pending - 1)
            self.generation += 1
            self.epoch = None

    # --- the listening thread ----------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"epoch-watch {self.key}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop listening: the thread closes its connection and ends within `poll_s` (not waited for)."""
        self.stopping.set()
        self._set(None)

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:
                self._set(None)  # meanwhile every reader reads the table
                if failures == 0:
                    log.warning(
                        "data epoch listener: %s; reading the epoch per request until it is back", exc
                    )
                failures += 1
                self.stopping.wait(min(5.0, 0.5 * failures))
        self._set(None)

    def _listen(self) -> None:
        fairy = self.engine.raw_connection()  # made as the engine makes its connections (timeouts, options)
        conn: Any = fairy.driver_connection
        fairy.detach()
        try:
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"LISTEN {EPOCH_CHANNEL}")
            while not self.stopping.is_set():
                # read after LISTEN, so no bump can fall between the two
                generation = self.current()[1]
                epoch = int(conn.execute(_EPOCH_SQL).fetchone()[0])
                with self.lock:
                    if generation == self.generation and epoch != self.epoch:
                        self.generation += 1
                        self._known(epoch)
                for note in conn.notifies(timeout=self.poll_s):
                    if self.stopping.is_set():
                        return
                    if note.payload.isdigit():
                        self._set(int(note.payload))
        finally:
            conn.close()


_WATCHES: dict[str, EpochWatch] = {}
_WATCHES_LOCK = threading.Lock()


def watch(engine: Engine) -> EpochWatch:
    """Start keeping the engine's database's epoch in memory (or share the watch already running); pair
    with `unwatch`."""
    key = database_key(engine)
    with _WATCHES_LOCK:
        w = _WATCHES.get(key)
        if w is None:
            w = _WATCHES[key] = EpochWatch(engine)
            w.start()
        w.users += 1
        return w


def unwatch(engine: Engine) -> None:
    key = database_key(engine)
    with _WATCHES_LOCK:
        w = _WATCHES.get(key)
        if w is None:
            return
        w.users -= 1
        if w.users > 0:
            return
        del _WATCHES[key]
    w.stop()


def watched(engine: Engine) -> EpochWatch | None:
    """The running watch of the engine's database, if any."""
    return _WATCHES.get(database_key(engine)) if _WATCHES else None


def data_epoch(conn: Connection) -> int:
    """The data epoch (app.ingest.provenance.bump_epoch): from memory while a watch runs for the database,
    else one primary-key read."""
    w = watched(conn.engine)
    if w is None:
        return int(conn.execute(text(_EPOCH_SQL)).scalar_one())
    epoch, generation = w.current()
    if epoch is not None:
        return epoch
    epoch = int(conn.execute(text(_EPOCH_SQL)).scalar_one())
    w.store(epoch, generation)
    return epoch


@event.listens_for(Engine, "before_cursor_execute")
def _bump_seen(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
    """A statement of this process that bumps the epoch: readers go to the table until its connection is
    back in the pool (committed or rolled back)."""
    if "data_epoch" not in statement or not _WATCHES or statement.lstrip()[:6].upper() != "UPDATE":
        return
    w = watched(conn.engine)
    if w is None:
        return
    info = conn.connection.info
    if _BUMP_MARK not in info:
        info[_BUMP_MARK] = w
        w.bump_started()


def _bump_done(dbapi_connection: Any, record: Any, *_: Any) -> None:
    w = record.info.pop(_BUMP_MARK, None) if record is not None else None
    if w is not None:
        w.bump_ended()


for _name in ("checkin", "invalidate", "close"):
    event.listen(Pool, _name, _bump_done)
