"""The tables a server reads from the online store, put back if it loses them.

A feedback join's server reads its users and items tables; a label-in-event
server the tables of the pipeline's lookups. At start a server reads each
table's file, runs ``recount`` (the server counts its log's events into the
store's counters), replaces each table's content in the Store with its file's
rows (``Store.replace_table``), in the order given (users first), every row
valid from its ``as_of`` (from 0 in a table without one; the store keeps a
key's newest ``max_versions``), and then writes each table's marker: the row
``{"rows": N, "incarnation": I, "pipeline": P}`` under the table's name in the
store table ``LOADED``, I the store's ``incarnation`` when the load began, P
the pipeline's name: a server of another pipeline whose tables have the same
names is refused at its start (ConfigError), rather than replace them. A key or
a version that the file no longer holds (an item deleted from items.csv) is
deleted from the store, so that after a start every server sharing the store
serves the file's table, as the joiner reads it. Servers that share a store
are meant to load the same files: of servers started with different ones, the
last to load a table wins whole (every server serves that file's table, never
a mix of two). A Redis restarted without persistence, or flushed, loses the
rows, the counters and the markers together; one restarted from an older
snapshot (after a crash) holds them as they were then, its markers of an
earlier incarnation: a table is lost when its marker is gone or of another
incarnation than the store's now.

A label-in-event request reads one row per lookup as of its event's ts
(``row``): where none is found the markers are read, the lost tables loaded
again as below and the row read again; a key in no table is an empty row, as
in the joiner. A feedback request reads its candidates' rows as of its time (ms). Where one is
missing, or the store's incarnation is not the one the server last saw (a
Redis restarted: the store learns it before the rows are read), and only then,
the server reads the markers: the tables whose
marker is gone are loaded again the same way, from the same files, by one
thread at a time (the others wait, then find the markers back), with a
WARNING, and the candidates' rows are read again. Then the user's row. Since
the counters are recounted before any row is put, and the users table before
the items table, a request that finds every candidate's row finds its counts
and the whole users table too: a user in no table is a cold start, served an
empty row. A request whose rows are all there, or whose user is new, costs
what it did; an item in no table costs one more read of the markers and of
the rows before its 422.

Each table is replaced in one atomic batch and the markers are written last,
so a reader in any server, while a table is loaded or put back, sees the
table as it was before (none, after a loss: it then waits for the table) or
as the file has it, never a part of each. Where loading fails (a file is
gone, Redis is down again) the request gets 503 (Unavailable) and the next
one that misses tries again. A store that drops some keys and keeps others
would not be noticed (rows missing, their marker still there): a Redis that
may evict keys is refused when the store is opened (tables.redis).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from livelearn.errors import BadInput, ConfigError, LivelearnError, Unavailable
from livelearn.spec import RESERVED_PREFIX, Table
from livelearn.tables.offline import read_rows
from livelearn.tables.store import Row, Store

logger = logging.getLogger("livelearn.serve")

#: The store table of the load markers: key = a table's name, row = {"rows": N}.
LOADED = f"{RESERVED_PREFIX}loaded"


class ServedTables:
    """Reads the rows of requests from ``store``; loads ``tables`` from ``data_dir`` at
    creation and again whenever the store has lost them."""

    def __init__(self, store: Store, tables: Sequence[Table], data_dir: str | Path,
                 recount: Callable[[], object] = lambda: None, pipeline: str | None = None):
        self.store, self.data_dir, self.recount = store, data_dir, recount
        self.pipeline = pipeline
        self._tables = tuple(tables)  # in the order they load: users first (see rows)
        self._lock = threading.Lock()
        self._seen = store.incarnation  # the store's incarnation at the last look at markers
        self._check_owner()
        self._load(self._tables)

    def _check_owner(self) -> None:
        """ConfigError if the store holds one of the tables as another pipeline loaded it
        (its marker names that pipeline): loading would replace that pipeline's table."""
        marked = self.store.get_rows(LOADED, [t.name for t in self._tables])
        for table in self._tables:
            owner = marked.get(table.name, {}).get("pipeline")
            if None not in (owner, self.pipeline) and owner != self.pipeline:
                raise ConfigError(
                    f"the online store holds table '{table.name}' of pipeline '{owner}', not "
                    f"of '{self.pipeline}': loading it would replace that pipeline's table, "
                    f"whose servers would serve these rows as theirs. Give each pipeline "
                    f"sharing a Redis its own namespace (?namespace=NAME in the store URL)")

    def row(self, table: str, key: str, ts: int) -> Row:
        """The row of ``key`` in ``table`` as of ``ts`` (ms), empty if it has none."""
        found = self.store.get_rows(table, [key], ts).get(key)
        if found is None or self.store.incarnation != self._seen:
            self._put_back_lost()
            found = self.store.get_rows(table, [key], ts).get(key)
        return {} if found is None else found

    def rows(self, user: str, items: Sequence[str], ts: int) -> tuple[Row, list[Row]]:
        """For a feedback join's tables (users, items): the user's row (empty if it is in
        no table) and each item's, as of ``ts`` (ms); BadInput (422) naming the first item
        that has no row as of ``ts``, and whether it is in no table or its rows start later."""
        users, items_table = self._tables
        item_rows = self.store.get_rows(items_table.name, items, ts)
        if len(item_rows) < len(set(items)) or self.store.incarnation != self._seen:
            self._put_back_lost()
            item_rows = self.store.get_rows(items_table.name, items, ts)
            for item in items:
                if item not in item_rows:
                    raise BadInput(self._no_row(items_table.name, item, ts))
        user_row = self.store.get_rows(users.name, [user], ts).get(user, {})
        return user_row, [item_rows[item] for item in items]

    def _no_row(self, table: str, item: str, ts: int) -> str:
        """Why ``item`` has no row as of ``ts``: it is in no table, or its rows (those the
        store keeps) start later; it was said to be in no table either way."""
        if item not in self.store.get_rows(table, [item]):
            return f"field 'items': item {item!r} is not in table '{table}'"
        return (f"field 'items': item {item!r} has no row in table '{table}' as of ts {ts} "
                f"(ms): its rows start later (the store keeps a key's "
                f"{self.store.max_versions} newest)")

    def ready(self) -> None:
        """Unavailable if the store does not answer, or lost tables and cannot load them
        again; lost tables are loaded again now, as a request that misses a row would."""
        self._put_back_lost()

    def _put_back_lost(self) -> None:
        """Load again the tables whose marker the store lost (or holds of an earlier
        incarnation), one thread at a time."""
        incarnation = self.store.incarnation
        if not self._lost(incarnation):
            self._seen = incarnation
            return
        with self._lock:
            incarnation = self.store.incarnation
            lost = self._lost(incarnation)
            if not lost:  # another thread (or server) put them back while this one waited
                self._seen = incarnation
                return
            names = ", ".join(f"'{t.name}'" for t in lost)
            started = time.perf_counter()
            try:
                self._load(lost, incarnation)
            except LivelearnError as e:
                raise Unavailable(f"the online store lost table(s) {names} and loading them "
                                  f"again failed: {e}") from e
            self._seen = incarnation
            logger.warning("the online store lost table(s) %s (a Redis restarted, without "
                           "persistence or from an older snapshot, or flushed?): loaded them "
                           "and the counters again from %s in %.1f s", names, self.data_dir,
                           time.perf_counter() - started)

    def _lost(self, incarnation: str) -> list[Table]:
        """The tables whose marker is not in the store, or is of another incarnation."""
        marked = self.store.get_rows(LOADED, [t.name for t in self._tables])
        return [t for t in self._tables
                if marked.get(t.name, {}).get("incarnation") != incarnation]

    def _load(self, tables: Sequence[Table], incarnation: str | None = None) -> None:
        """Read the files (errors before anything is written), ``recount``, replace each
        table's content with its file's rows (users first), then the markers, of the
        store's ``incarnation`` as it was before anything was written: one that changes
        meanwhile leaves the markers of another, and the tables lost."""
        incarnation = self.store.incarnation if incarnation is None else incarnation
        read = [(table, read_rows(table, self.data_dir)) for table in tables]
        self.recount()
        for table, rows in read:
            versions: dict[str, dict[int, Row]] = {}
            for row in rows:
                ts = 0 if table.as_of is None else row[table.as_of]
                versions.setdefault(str(row[table.key]), {})[ts] = row
            self.store.replace_table(table.name, versions)
        owner = {} if self.pipeline is None else {"pipeline": self.pipeline}
        self.store.put_rows(LOADED, {table.name: {"rows": len(rows), "incarnation": incarnation,
                                                  **owner} for table, rows in read}, ts_ms=0)
