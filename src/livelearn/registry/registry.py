"""Model versions on disk with their metadata, status and lineage.

A version is a model file (``v000001.npz``) plus a row in ``index.db``
(SQLite): its parent, the input offsets it was trained on, its metrics, its
status, the event time at which it started serving (the last time: each time it
was swapped in is kept in order, ``servings``, so that a rollback goes back to the version
swapped in just before, whatever the servers' event clocks said, and one served again
keeps its first time), and the SHA-256
of its file, checked on every load: a damaged, truncated, missing or unreadable file
raises Corrupt.
Bulky data that only one reader needs (the trainer's recent sample ids, the
gate's window of scores: ~100 KB a version) are the version's ``details``, kept
in a table of their own and read one version at a time, so that listing
versions stays cheap however many there are; the index finds the versions of a
status (the candidates, the one serving) without reading the others. Status moves
candidate -> approved | rejected, approved -> serving -> retired; a rollback
puts a retired version back to approved. With a canary (Policies.canary_share),
candidate -> canary -> approved | rejected: a canary serves a share of the users
beside the incumbent, and is not the incumbent; a candidate left waiting behind
a newer one is retired unjudged. Every change is logged as a decision
with its reason. ``promote`` and ``rollback`` check the target's file first, and
change every status they change in one transaction. A verdict reached on what was
read (the gate's) is recorded only if the version's status is still what was read
(``set_status(..., was=...)``, ``rollback(..., version=...)``): a promote or rollback
by hand meanwhile is not undone, and nothing is decided twice. ``prune`` deletes the model
files and details of all but the newest past versions (a version is past unless
it is a candidate, the incumbent or serving); their rows stay, with no checksum:
nothing can load or promote them.

A registry is one pipeline's: the first role to use it records the pipeline's name,
and a role of another pipeline is refused (``check_pipeline``).

An index.db that is another program's SQLite file is refused (ConfigError) before
anything is written to it.

An index.db that another process keeps locked longer than a write waits (30 s:
log/sqlite.py) raises Unavailable naming it; reading never waits for a writer.

A write the disk refuses (full, read-only, failing) raises ConfigError naming the
registry and the reason, and leaves nothing half-written: a model file is in the
folder only once it is complete, and listed in the index only once it is there.

A version of an adapter (River, scikit-learn, PyTorch) is a pickle, and loading
it runs code: the Registry loads it (``trusted=True``) because its own trainer
wrote the file and the index's SHA-256 matches. Give a registry's folder the
same protection as the pipeline's code: whoever can write to it can run code
in the roles that load its versions.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from livelearn.errors import BadInput, ConfigError, Corrupt, NotFound, make_folder
from livelearn.log.sqlite import CANNOT_WRITE, check_claim, connect, read_only_folder, take_claim
from livelearn.models.base import Learner, load_learner, save_learner

STATUSES = ("candidate", "canary", "approved", "serving", "rejected", "retired")
_COLUMNS = ["id", "parent", "status", "created", "meta", "serving_since_ts", "sha256"]
_PRUNED = "model file pruned"  # how the note of a pruned file begins among the decisions

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY, parent INTEGER, status TEXT NOT NULL, created REAL NOT NULL,
    meta BLOB NOT NULL, serving_since_ts INTEGER, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS details (version INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (grp TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
    owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pipeline (name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS servings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL, since_ts INTEGER);
CREATE INDEX IF NOT EXISTS servings_by_version ON servings (version, seq);
CREATE INDEX IF NOT EXISTS versions_by_status ON versions (status, serving_since_ts);
CREATE INDEX IF NOT EXISTS versions_with_file ON versions (id) WHERE sha256 != '';
CREATE INDEX IF NOT EXISTS decisions_by_version ON decisions (version);
"""


@dataclass(frozen=True)
class Version:
    id: int
    parent: int | None
    status: str
    created: float  # wall clock, seconds since the epoch
    meta: dict[str, Any]  # metrics, offsets trained on, sample counts, ...
    serving_since_ts: int | None  # event time (ms) at which it began serving, the last time
    pruned: bool = False  # its model file was deleted (``Registry.prune``)


class Registry:
    """Versions in a directory; safe to share between threads and processes."""

    def __init__(self, path: str | Path, create: bool = True):
        """The registry in directory ``path``, made there if ``create`` (else NotFound
        if there is none)."""
        self.path = Path(path)
        if not create and not (self.path / "index.db").is_file():
            raise NotFound(f"no registry at {self.path}")
        make_folder(self.path, "registry folder")
        self._local = threading.local()
        self._claims: dict[str, int] = {}  # trainer group -> epoch of this process's claim
        try:
            self._check_schema()
            self._db().executescript(_SCHEMA)
            self._db().execute("PRAGMA journal_mode=WAL")
        except (sqlite3.DatabaseError, Corrupt) as e:  # no permission, a damaged index
            why = e.__context__ if isinstance(e, Corrupt) else e  # sqlite3's own words
            raise ConfigError(f"registry {str(self.path)!r}: cannot open its index.db "
                              f"({why}){read_only_folder(self.path / 'index.db')}") from None
        self._check_index()

    def _check_schema(self) -> None:
        """ConfigError if index.db is another program's SQLite file, not a registry's;
        checked before anything is written to it."""
        tables = {name: [c[1] for c in self._db().execute(f"PRAGMA table_info('{name}')")]
                  for (name,) in self._db().execute(
                      "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and tables.get("versions") != _COLUMNS:
            raise ConfigError(f"registry {str(self.path)!r}: its index.db is not a livelearn "
                              f"registry's (it holds tables {', '.join(sorted(tables))}; a "
                              f"registry's table versions has columns {', '.join(_COLUMNS)}): "
                              f"choose another --registry folder")

    def _check_index(self) -> None:
        """ConfigError if model files lie beside an index that knows no version (an
        index.db emptied or replaced): publishing would write over them. The first
        version's file alone may be there: a publish killed before its row was written."""
        if self._db().execute("SELECT 1 FROM versions LIMIT 1").fetchone() is None:
            files = sorted(f for f in self.path.glob("v*.npz") if f != self.file(1))
            if files:
                raise ConfigError(f"registry {str(self.path)!r}: its index.db knows no "
                                  f"version, yet {len(files)} model files are there "
                                  f"({files[0].name}, ...): restore index.db, or move the "
                                  f"files away to start anew")

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path / "index.db")
            self._local.db = db
        return db

    @contextmanager
    def _write(self, fenced: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction of the index: committed at the end of the block, rolled
        back if it raises (the thread's connection is then free for the next one).
        ConfigError if the disk refuses the write; if ``fenced``, Fenced if another
        process claimed a trainer group after this Registry did (``claim``)."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if fenced:
                    for group, epoch in self._claims.items():
                        check_claim(db, group, epoch, f"registry {str(self.path)!r}")
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite rolls back by itself after some errors
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if not (e.sqlite_errorname or "").startswith(CANNOT_WRITE):
                raise  # a constraint, say (a locked index raised Unavailable: Connection)
            raise self._cannot_write("index.db", e) from None

    def _cannot_write(self, name: str, e: Exception) -> ConfigError:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        return ConfigError(f"registry {str(self.path)!r}: cannot write {name} ({why}): is "
                           f"its disk full or read-only? Nothing was written")

    def file(self, version: int) -> Path:
        return self.path / f"v{version:06d}.npz"

    def check_pipeline(self, name: str, record: bool = True) -> None:
        """ConfigError if this registry is another pipeline's than ``name``: its models
        learned other features, and its offsets are another log's. The first role to
        check (a trainer or a server) records its pipeline's name, so that a role of
        another pipeline started later is refused even before any version exists; with
        ``record`` False (``livelearn models``), nothing is written. A
        registry from before the record is the newest version's ``meta["pipeline"]``'s
        (a version published before that was recorded is taken as this pipeline's)."""
        with self._write() if record else nullcontext(self._db()) as db:
            row = db.execute("SELECT name FROM pipeline").fetchone()
            made_by = row[0] if row is not None else self._newest_pipeline(db)
            if made_by is not None and made_by != name:
                raise ConfigError(f"registry {str(self.path)!r} holds the versions of pipeline "
                                  f"'{made_by}', not of '{name}': its models learned other "
                                  f"features from another log. Choose another --registry "
                                  f"(or give the pipeline its old name back)")
            if row is None and record:
                db.execute("INSERT INTO pipeline VALUES (?)", (name,))

    @staticmethod
    def _newest_pipeline(db: sqlite3.Connection) -> str | None:
        row = db.execute("SELECT meta FROM versions ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else orjson.loads(row[0]).get("pipeline")

    def claim(self, trainer: str) -> None:
        """Take over trainer group ``trainer`` (``meta["trainer"]``): from now on every
        write of an earlier claimant's Registry (a publish, the verdicts of its gate)
        raises Fenced and writes nothing, so one trainer and one gate decide at a time."""
        with self._write(fenced=False) as db:
            self._claims[trainer] = take_claim(db, trainer)

    def publish(self, learner: Learner, meta: dict[str, Any], parent: int | None,
                details: dict[str, Any] | None = None) -> Version:
        """Save a new candidate version; its file is complete before its row exists.
        Fenced if another process claimed ``meta["trainer"]`` after this one; ConfigError,
        and nothing published, if the disk refuses the file or the row (a file whose row
        was refused is deleted again)."""
        placed: Path | None = None  # the model file being published
        try:
            with self._write() as db:
                vid = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM versions"
                                     ).fetchone()[0])
                placed = self.file(vid)  # not listed yet: a file there is a killed publish's
                sha256 = self._save(learner, vid)
                db.execute("INSERT INTO versions VALUES (?, ?, 'candidate', ?, ?, NULL, ?)",
                           (vid, parent, time.time(), orjson.dumps(meta), sha256))
                if details is not None:
                    db.execute("INSERT INTO details VALUES (?, ?)",
                               (vid, orjson.dumps(details)))
        except BaseException:
            if placed is not None:  # its row not written: nothing may point to it
                with suppress(OSError):
                    placed.unlink()
            raise
        return self.get(vid)

    def _save(self, learner: Learner, version: int) -> str:
        """Write ``learner`` as the model file of ``version``, whole or not at all; its
        SHA-256. ConfigError if the disk refuses it."""
        tmp = self.file(version).with_suffix(".tmp")
        try:
            save_learner(learner, tmp)
            tmp.replace(self.file(version))
            return _sha256(self.file(version))
        except OSError as e:
            with suppress(OSError):  # the part written, if any
                tmp.unlink()
            raise self._cannot_write(f"model file {tmp.name}", e) from None

    def get(self, version: int) -> Version:
        return _version(self._row(version))

    def _row(self, version: int) -> tuple[Any, ...]:
        """The index's row of ``version``; NotFound if there is none (a number beyond
        SQLite's 64-bit integers too, which it cannot even look up)."""
        row = None if not -2**63 <= version < 2**63 else self._db().execute(
            "SELECT * FROM versions WHERE id = ?", (version,)).fetchone()
        if row is None:
            raise NotFound(f"model version {version} is not in the registry {self.path}")
        return tuple(row)

    def details(self, version: int) -> dict[str, Any]:
        """A version's details as published (a version of a registry from before details
        had their own table holds them in its metadata: that is returned instead)."""
        row = self._db().execute("SELECT data FROM details WHERE version = ?",
                                 (version,)).fetchone()
        return self.get(version).meta if row is None else orjson.loads(row[0])

    def load(self, version: int) -> Learner:
        """The learner of a version, exactly as published; Corrupt if its file is not.
        An adapter's pickle is loaded too: the module docstring says why."""
        self.check_file(version)
        return load_learner(self.file(version), trusted=True)

    def check_file(self, version: int) -> None:
        """Corrupt unless the model file of ``version`` is there, readable and as published
        (its SHA-256 matches the index); NotFound if there is no such version."""
        expected = self._row(version)[-1]
        path = self.file(version)
        if not expected:
            raise Corrupt(f"model file {path} of v{version} was pruned (Policies.keep_versions)")
        try:
            sound = path.is_file() and _sha256(path) == expected
        except OSError as e:  # no permission, a failing disk
            raise Corrupt(f"model file {path} of v{version} cannot be read "
                          f"({e.strerror or e})") from None
        if not sound:
            raise Corrupt(f"model file {path} of v{version} is damaged or missing "
                          f"(SHA-256 does not match the registry)")

    def newest(self, n: int) -> list[Version]:
        """The ``n`` newest versions, newest first (a few rows, however many there are)."""
        rows = self._db().execute("SELECT * FROM versions ORDER BY id DESC LIMIT ?", (n,))
        return [_version(r) for r in rows]

    def count(self) -> int:
        """How many versions were published."""
        return int(self._db().execute("SELECT COUNT(*) FROM versions").fetchone()[0])

    def versions(self, status: str | None = None) -> list[Version]:
        """Versions in publication order, optionally only those with one status."""
        if status is not None and status not in STATUSES:
            raise BadInput(f"status {status!r}: expected one of {', '.join(STATUSES)}")
        sql = "SELECT * FROM versions" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        return [_version(r) for r in self._db().execute(sql, (status,) if status else ())]

    def statuses(self) -> list[str]:
        """Every version's status, in publication order (cheap: no metadata is read)."""
        return [r[0] for r in self._db().execute("SELECT status FROM versions ORDER BY id")]

    def incumbent(self) -> Version | None:
        """The version the server serves or is about to: the newest approved or serving one."""
        row = self._db().execute("SELECT * FROM versions WHERE status IN ('approved', 'serving') "
                                 "ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else _version(row)

    def canary(self) -> Version | None:
        """The version the servers score a share of the users with, if any (the newest)."""
        row = self._db().execute("SELECT * FROM versions WHERE status = 'canary' "
                                 "ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else _version(row)

    def set_status(self, version: int, status: str, reason: str, was: str | None = None
                   ) -> bool:
        """Change a version's status and log the decision with its reason; with ``was``,
        only if its status is still ``was`` (another process may have changed it since it
        was read). Whether it changed."""
        if status not in STATUSES:
            raise BadInput(f"status {status!r}: expected one of {', '.join(STATUSES)}")
        with self._write() as db:
            if was is not None and _status(db, version) != was:
                return False
            _set_status(db, version, status, reason)
        return True

    def previous_served(self, version: Version) -> Version | None:
        """The version that served before ``version``: of the retired versions with a file,
        the one swapped in last (``servings``, in the order servers swapped them in:
        whatever their event clocks, which differ between servers, and however many began
        at one event time). In a registry from before servings were kept, the one with the
        latest serving start (of any, if ``version``'s is not known yet: a server swapped
        it in before its first request, after they all served)."""
        # CROSS JOIN: SQLite walks the servings newest first (a few rows back, as a rule),
        # not every retired version
        row = self._db().execute(
            "SELECT v.* FROM servings s CROSS JOIN versions v ON v.id = s.version WHERE "
            "v.status = 'retired' AND v.sha256 != '' AND v.id != ? ORDER BY s.seq DESC "
            "LIMIT 1", (version.id,)).fetchone()
        if row is None:
            since = version.serving_since_ts
            row = self._db().execute(
                "SELECT * FROM versions WHERE status = 'retired' AND serving_since_ts IS NOT "
                "NULL AND sha256 != '' AND serving_since_ts <= ? AND id != ? "
                "ORDER BY serving_since_ts DESC, id DESC LIMIT 1",
                (2**63 - 1 if since is None else since, version.id)).fetchone()
        return None if row is None else _version(row)

    def first_served(self) -> dict[int, int]:
        """The event time (ms) at which each version that served first began serving: a
        version served again (promoted back, a rollback's target) began at its first time,
        though ``serving_since_ts`` is its last. A version that served in a registry from
        before the servings were kept has its ``serving_since_ts`` only."""
        first = {v.id: v.serving_since_ts for v in self.versions()
                 if v.serving_since_ts is not None}
        rows = self._db().execute("SELECT version, MIN(since_ts) FROM servings "
                                  "WHERE since_ts IS NOT NULL GROUP BY version")
        return first | {version: ts for version, ts in rows}

    def promote(self, version: int, reason: str) -> str:
        """Make ``version`` the incumbent: approve it (one serving stays serving), retire
        newer approved or serving ones; returns its status then.

        NotFound if its file was pruned, Corrupt if it is damaged or missing (no server
        could load it): then nothing changes. Checked in the transaction that changes it,
        so that a gate cannot prune the file in between.
        """
        with self._write() as db:
            if not self._row(version)[-1]:
                raise NotFound(f"model version {version}: its file was pruned from {self.path}")
            self.check_file(version)
            return _promote(db, version, reason)

    def rollback(self, reason: str, version: int | None = None) -> tuple[int, int]:
        """Reject the serving version (only if it is ``version``, when given) and promote
        the one that served before it, in one transaction.

        Returns (rejected, restored); NotFound if nothing to roll back to (or ``version``
        no longer serves: rolled back or superseded meanwhile), Corrupt if the file of the
        one before is damaged or missing (then nothing changes).
        """
        with self._write() as db:  # read and changed in one transaction
            serving = self.versions("serving")
            if version is not None and (not serving or serving[-1].id != version):
                raise NotFound(f"v{version} no longer serves in {self.path}: rolled back or "
                               f"superseded meanwhile")
            previous = self.previous_served(serving[-1]) if serving else None
            if previous is None:
                raise NotFound(f"no serving version with a previous one to roll back to in "
                               f"{self.path}")
            self.check_file(previous.id)
            _set_status(db, serving[-1].id, "rejected", reason)
            _promote(db, previous.id, f"rollback target: {reason}")
        return serving[-1].id, previous.id

    def prune(self, keep: int) -> list[int]:
        """Delete the model files and details of past versions (all but the candidates, the
        incumbent and the version serving) but the ``keep`` newest; returns their ids.

        A pruned version keeps its row, lineage and decisions; its checksum is emptied,
        so that loading it says so, and neither ``promote`` nor a rollback picks it.
        """
        # each step reads the few newest rows and the few with a file (the indexes), not
        # every version ever published: the gate prunes after each verdict
        past = "+status IN ('approved', 'retired', 'rejected') AND id != ?"  # + : by id
        with self._write() as db:
            incumbent = db.execute("SELECT COALESCE(MAX(id), -1) FROM versions WHERE status "
                                   "IN ('approved', 'serving')").fetchone()[0]
            # the oldest past version kept: the keep-th newest (none to prune if fewer)
            row = (None,) if keep <= 0 else db.execute(
                f"SELECT id FROM versions WHERE {past} ORDER BY id DESC LIMIT 1 OFFSET ?",
                (incumbent, keep - 1)).fetchone()
            old = [] if row is None else [vid for (vid,) in db.execute(
                f"SELECT id FROM versions WHERE sha256 != '' AND {past} AND id < ? "
                f"ORDER BY id", (incumbent, 2**63 - 1 if row[0] is None else row[0]))]
            for vid in old:
                db.execute("UPDATE versions SET sha256 = '' WHERE id = ?", (vid,))
                db.execute("DELETE FROM details WHERE version = ?", (vid,))
                db.execute("INSERT INTO decisions (version, status, reason, at) SELECT id, status, "
                           "?, ? FROM versions WHERE id = ?",
                           (f"{_PRUNED} (the registry keeps {keep} past versions)",
                            time.time(), vid))
        for vid in old:  # after the commit: a file is gone only once nothing points to it
            self.file(vid).unlink(missing_ok=True)
        return old

    def mark_serving(self, version: int, event_ts: int | None) -> bool:
        """Record that a server swapped ``version`` in at event time ``event_ts`` (ms).

        ``event_ts`` is None when the server has seen no event time yet; called
        again with one, it fills the serving time in. The version becomes serving
        (recorded already by another server: its serving time is kept) and the one
        served before it retired, unless it is no longer approved (rolled back or
        superseded while a server loaded it): then nothing changes and the
        answer is False. A version served again (promoted back, a rollback's target)
        serves from ``event_ts``, not from its first time: a rollback goes back to
        the version that served just before it (``previous_served``).
        """
        with self._write() as db:
            row = db.execute("SELECT status, serving_since_ts FROM versions WHERE id = ?",
                             (version,)).fetchone()
            if row is None or row[0] not in ("approved", "serving"):
                return False  # rolled back or superseded meanwhile: not serving after all
            if row[0] == "serving" and (row[1] is not None or event_ts is None):
                return True  # recorded already
            since = event_ts if row[0] == "approved" else row[1] or event_ts
            db.execute("UPDATE versions SET status = 'serving', serving_since_ts = ? "
                       "WHERE id = ?", (since, version))
            _note_serving(db, version, since, swapped=row[0] == "approved")
            db.execute("UPDATE versions SET status = 'retired' WHERE status = 'serving' "
                       "AND id != ?", (version,))
            reason = (f"swapped in at event time {event_ts}" if row[0] == "approved" else
                      f"serving since event time {event_ts}: its first request")
            db.execute("INSERT INTO decisions (version, status, reason, at) "
                       "VALUES (?, 'serving', ?, ?)", (version, reason, time.time()))
        return True

    def served_before(self, version: int) -> bool:
        """Whether ``version`` served, then stopped (retired, rejected, approved again):
        serving now, it serves again."""
        return self._db().execute(
            "SELECT 1 FROM decisions a JOIN decisions b ON b.version = a.version AND "
            "b.seq > a.seq WHERE a.version = ? AND a.status = 'serving' AND "
            "b.status != 'serving' LIMIT 1", (version,)).fetchone() is not None

    def decisions(self) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT version, status, reason, at FROM decisions ORDER BY seq")
        return [{"version": v, "status": s, "reason": r, "at": a} for v, s, r, a in rows]

    def verdicts(self, since: int = 0) -> dict[int, dict[str, Any]]:
        """The last approval, rejection or canary of each version from ``since`` on (by the
        gate, a rollback or by hand): {version: {"status", "reason", "at"}}; a version
        never judged has none. Notes of pruned files are not verdicts."""
        rows = self._db().execute(
            "SELECT version, status, reason, at, MAX(seq) FROM decisions WHERE version >= ? "
            "AND status IN ('canary', 'approved', 'rejected') AND reason NOT LIKE ? "
            "GROUP BY version",
            (since, f"{_PRUNED}%"))  # SQLite: the other columns come from the MAX(seq) row
        return {v: {"status": s, "reason": r, "at": a} for v, s, r, a, _ in rows}


def _status(db: sqlite3.Connection, version: int) -> str | None:
    row = db.execute("SELECT status FROM versions WHERE id = ?", (version,)).fetchone()
    return None if row is None else str(row[0])


def _set_status(db: sqlite3.Connection, version: int, status: str, reason: str) -> None:
    db.execute("UPDATE versions SET status = ? WHERE id = ?", (status, version))
    db.execute("INSERT INTO decisions (version, status, reason, at) VALUES (?, ?, ?, ?)",
               (version, status, reason, time.time()))


def _note_serving(db: sqlite3.Connection, version: int, since: int | None, swapped: bool
                  ) -> None:
    """Keep in ``servings`` that ``version`` serves since event time ``since``: a row of
    its own each time it is swapped in (their order tells apart versions swapped in at
    one event time), its time filled in once a request brings one."""
    if swapped:
        db.execute("INSERT INTO servings (version, since_ts) VALUES (?, ?)", (version, since))
    else:
        db.execute("UPDATE servings SET since_ts = ? WHERE seq = (SELECT MAX(seq) FROM "
                   "servings WHERE version = ?) AND since_ts IS NULL", (since, version))


def _promote(db: sqlite3.Connection, version: int, reason: str) -> str:
    """Approve ``version`` and retire the newer approved or serving ones, in ``db``'s
    transaction; its new status. A version serving stays serving: approved, it would be
    neither the one a rollback rejects nor, once retired, one it goes back to."""
    newer = db.execute("SELECT id FROM versions WHERE id > ? AND status IN "
                       "('approved', 'serving') ORDER BY id", (version,)).fetchall()
    for (vid,) in newer:
        _set_status(db, vid, "retired", f"superseded: v{version} promoted ({reason})")
    status = "serving" if _status(db, version) == "serving" else "approved"
    _set_status(db, version, status, reason)
    return status


def _version(row: tuple[Any, ...]) -> Version:
    vid, parent, status, created, meta, since, sha256 = row
    return Version(vid, parent, status, created, orjson.loads(meta), since, pruned=not sha256)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
