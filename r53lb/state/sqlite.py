"""The embedded state store: health counters, drains, reputation, events. One SQLite file."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from ..core.health import NodeHealth
from .base import STATE_LOST, Event, StateError, Store

__all__ = ["STATE_LOST", "Event", "StateError", "StateStore", "Store"]

log = logging.getLogger("r53lb.state")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS health (
  pool TEXT NOT NULL, node TEXT NOT NULL, up INTEGER NOT NULL, since TEXT NOT NULL,
  successes INTEGER NOT NULL, failures INTEGER NOT NULL, reason TEXT NOT NULL,
  recovered_at TEXT, PRIMARY KEY (pool, node));
CREATE TABLE IF NOT EXISTS drains (
  pool TEXT NOT NULL, node TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,
  PRIMARY KEY (pool, node));
CREATE TABLE IF NOT EXISTS checks (
  pool TEXT NOT NULL, node TEXT NOT NULL, slot TEXT NOT NULL, at TEXT NOT NULL,
  result TEXT NOT NULL, PRIMARY KEY (pool, node, slot));
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, pool TEXT NOT NULL,
  node TEXT NOT NULL, kind TEXT NOT NULL, from_state TEXT, to_state TEXT, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
"""


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(timezone.utc).isoformat()


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


# SQLite's primary result codes (https://www.sqlite.org/rescode.html) that decide what an error means.
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 5, 6, 8, 10, 11, 13, 14, 26
_CORRUPT_CODES = (_CORRUPT, _NOTADB)
_LOST_KEY = "state_lost"


class _Corrupt(Exception):
    """The file is really damaged: not a database, or its integrity check fails. Only this is rebuilt."""


def _code(e: sqlite3.Error) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _owner(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "unknown owner"
    try:
        name = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        name = f"uid {st.st_uid}"
    return f"owned by {name}, mode {stat.S_IMODE(st.st_mode):04o}"


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def not_writable(path: Path) -> str | None:
    """Why this process cannot write the state at `path`, as one line an operator acts on; None when it can."""
    uid = os.geteuid()
    if _read_only_fs(path.parent if not path.exists() else path):
        return f"state: {path} is on a read-only file system; set state.path to a writable place"
    # The file first, then what SQLite keeps beside it (journal, shared memory, our lock), then the
    # directory, which must take new files (the WAL, the lock, a rebuilt file).
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")):
        if p.exists() and not os.access(p, os.R_OK | os.W_OK):
            return (f"state: {p} is not writable by uid {uid} ({_owner(p)}); "
                    f"fix its owner or mode, or set state.path")
    d = path.parent
    if not os.access(d, os.W_OK | os.X_OK):
        return (f"state: directory {d} is not writable by uid {uid} ({_owner(d)}), and r53lb keeps its "
                f"journal and lock beside {path.name}; fix its owner or mode, or set state.path")
    return None


def foreign_to_root(path: Path) -> str | None:
    """Root about to write a state that belongs to another user (the service's): one line, or None.

    What root writes there (the file, its WAL and shared memory, a lock) would be root's, and the
    service, running as its own user, could no longer open its state: say who to run as instead.
    """
    if os.geteuid() != 0:
        return None
    target = path if path.exists() else path.parent
    try:
        uid = target.stat().st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    who = name if not name.startswith("uid ") else f"#{uid}"
    return (f"state: {target} belongs to {name}; as root r53lb would leave files there that {name} cannot "
            f"write: run this command as that user (sudo -u {who} r53lb ...)")


def state_error(e: BaseException, path: Path) -> StateError:
    """One line for an error of the store that is not (or may not be treated as) corruption."""
    code = _code(e) if isinstance(e, sqlite3.Error) else None
    if isinstance(e, _Corrupt) or code in _CORRUPT_CODES:
        return StateError(f"state: {path} is corrupt ({e}); stop r53lb and run `r53lb sync` to move it "
                          f"aside and rebuild it")
    if code in (_BUSY, _LOCKED):
        return StateError(f"state: {path} is locked by another r53lb process")
    if code == _FULL:
        return StateError(f"state: cannot write {path}: the disk is full; free space (the file is kept "
                          f"as it is, nothing was renamed)")
    if code == _IOERR:
        return StateError(f"state: I/O error on {path} ({e}); check the disk, nothing was renamed")
    if code in (_READONLY, _PERM, _CANTOPEN) or isinstance(e, PermissionError):
        why = not_writable(path)
        if why:
            return StateError(why)
        if code == _CANTOPEN:
            return StateError(f"state: cannot open {path} ({e}); check the path and its permissions")
        return StateError(f"state: {path} is read-only to r53lb ({e}); fix its owner or mode, or set state.path")
    if isinstance(e, OSError):
        return StateError(f"state: {path}: {e.strerror or e}")
    return StateError(f"state: {path}: {e}")


def _is_corrupt(e: BaseException) -> bool:
    return isinstance(e, _Corrupt) or (isinstance(e, sqlite3.Error) and _code(e) in _CORRUPT_CODES)


def _memory() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)


class StateStore:
    """The SQLite store. `open(path)` for the commands that write; `open_readonly(path)` for those that only look.

    Only a file that is really corrupt is moved aside and rebuilt (loudly, and remembered until every
    node has been seen, so drains it may have held are not silently undone). Every other failure,
    whenever it happens, is a StateError with one line, and the file is left as it is.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, rebuilt: str | None = None, readonly: bool = False):
        self.path = path
        self.conn = conn
        self.rebuilt = rebuilt  # why the file was rebuilt this time, if it was
        # `run` reconciles a zone in a worker thread: one connection, used by one thread at a time.
        self._lock = threading.RLock()
        self.readonly = readonly  # an in-memory copy: nothing written to it reaches the file
        self._depth = 0  # transaction nesting

    # --- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, now: datetime | None = None) -> "StateStore":
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"state: cannot create {path.parent}: {e.strerror or e}; "
                             f"fix its parent's owner or set state.path") from None
        why = foreign_to_root(path) or not_writable(path)
        if why:
            raise StateError(why)
        rebuilt = None
        try:
            conn = cls._connect(path)
        except (sqlite3.Error, _Corrupt) as e:
            if not _is_corrupt(e):
                raise state_error(e, path) from None
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            try:
                os.replace(path, aside)
                for suffix in ("-wal", "-shm", "-journal"):
                    side = Path(str(path) + suffix)
                    if side.exists():
                        os.replace(side, Path(str(aside) + suffix))
            except OSError as oe:
                raise StateError(f"state: {path} is corrupt ({e}) and cannot be moved aside "
                                 f"({oe.strerror or oe}); move it away by hand") from None
            rebuilt = (f"state file {path} was unreadable ({e}); moved to {aside.name} and rebuilt from Route 53; "
                       f"nodes found at weight 0 are held at 0 ({STATE_LOST}) until `r53lb enable`")
            log.error(rebuilt, extra={"event": "state_rebuilt"})
            try:
                conn = cls._connect(path)
            except (sqlite3.Error, _Corrupt) as e2:
                raise state_error(e2, path) from None
        store = cls(path, conn, rebuilt)
        if rebuilt:
            with store.transaction():
                store.put_meta(_LOST_KEY, rebuilt)
                store.add_event(now or datetime.now(timezone.utc), "-", "-", "state", None, None, rebuilt)
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> "StateStore":
        """An in-memory copy of the file, for `status`, `plan`, `history`, `sync --dry-run`.

        Nothing on disk is created, renamed or rebuilt; a missing file is an empty store (a first run);
        a corrupt one is a StateError.
        """
        path = Path(path)
        try:
            exists = path.exists()
        except OSError as e:
            raise state_error(e, path) from None
        if not exists:
            mem = _memory()
            mem.executescript(SCHEMA)
            return cls(path, mem, readonly=True)
        if not os.access(path, os.R_OK):
            raise StateError(f"state: {path} is not readable by uid {os.geteuid()} ({_owner(path)}); "
                             f"run as its owner or set state.path")
        mem = _memory()
        uri = f"file:{quote(str(path.absolute()))}"
        wal = Path(f"{path}-wal")
        try:
            if not wal.exists():
                # No -wal: no connection has the file open and the main file is the whole state. Opened
                # `immutable`, SQLite creates no -wal/-shm beside it (mode=ro would, owned by whoever runs
                # `status`, and a service running as another user could then not open its own file).
                cls._copy(f"{uri}?immutable=1", mem)
            else:
                try:
                    cls._copy(f"{uri}?mode=ro", mem)
                except sqlite3.Error as e:
                    # A -wal with no -shm in a directory we may not write: with no WAL content
                    # pending, the main file alone is still the whole state.
                    if _code(e) not in (_READONLY, _CANTOPEN) or wal.stat().st_size > 0:
                        raise
                    cls._copy(f"{uri}?immutable=1", mem)
            mem.executescript(SCHEMA)  # a file from an older r53lb may lack a table
        except (sqlite3.Error, _Corrupt, OSError) as e:
            mem.close()
            if _is_corrupt(e):
                raise StateError(f"state: {path} is corrupt ({e}); run `r53lb sync` to move it aside and "
                                 f"rebuild it from Route 53") from None
            raise state_error(e, path) from None
        return cls(path, mem, readonly=True)

    @staticmethod
    def _copy(uri: str, mem: sqlite3.Connection) -> None:
        src = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
        try:
            src.execute("PRAGMA busy_timeout = 10000")
            row = src.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise _Corrupt(f"integrity check failed: {row[0] if row else 'no answer'}")
            src.backup(mem)
        finally:
            src.close()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise _Corrupt(f"integrity check failed: {row[0] if row else 'no answer'}")
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except BaseException:
            conn.close()
            raise
        return conn

    @classmethod
    def reader(cls, path: Path) -> "StateStore":
        """A read-only connection of its own, for the status page's HTTP thread: it sees what other
        processes (`r53lb drain`) committed and never waits on, or joins, the daemon's transactions."""
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=2.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 2000")
        except sqlite3.Error as e:
            raise StateError(f"state: cannot read {path}: {e}") from None
        return cls(Path(path), conn)

    def snapshot(self) -> "StateStore":
        """An in-memory copy: `plan` and `--dry-run` run the whole cycle against it and record nothing."""
        mem = _memory()
        with self._guard():
            self.conn.backup(mem)
        return StateStore(self.path, mem, readonly=True)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """One thread at a time on the connection; SQLite's errors leave as StateError with one line."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as e:
                raise state_error(e, self.path) from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing; a transaction inside another (same thread) joins it."""
        # `run` reconciles a zone in a worker thread: the lock keeps another thread's statements out
        # of this transaction until it ends (an RLock: the same thread may nest).
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with self._guard():
                self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except sqlite3.Error as e:
                self._rollback()
                raise state_error(e, self.path) from None
            except BaseException:
                self._rollback()
                raise
            finally:
                self._depth = 0
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()  # a COMMIT that failed (disk full) can leave the transaction open
                raise state_error(e, self.path) from None

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (a full disk, an I/O error): nothing left to undo.
        with suppress(sqlite3.Error):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    @contextmanager
    def exclusive(self, wait: float = 0.0) -> Iterator[None]:
        """One reconciling process at a time per state file; a second waits `wait` seconds, then fails."""
        if self.readonly:
            yield  # an in-memory copy records nothing: nobody to keep out
            return
        lock_path = Path(str(self.path) + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StateError(not_writable(self.path) or f"state: cannot open {lock_path}: {e.strerror or e}") from None
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StateError(
                            f"another r53lb run holds {lock_path}; waited {wait:g}s"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # --- small key/value state --------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._guard():
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put_meta(self, key: str, value: str | None) -> None:
        with self._guard():
            if value is None:
                self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def state_lost(self) -> str | None:
        return self.get_meta(_LOST_KEY)

    def clear_state_lost(self) -> None:
        self.put_meta(_LOST_KEY, None)

    # --- health ---------------------------------------------------------------------------

    def health(self) -> dict[tuple[str, str], NodeHealth]:
        with self._guard():
            rows = self.conn.execute(
                "SELECT pool, node, up, since, successes, failures, reason, recovered_at FROM health"
            ).fetchall()
        return {
            (p, n): NodeHealth(bool(up), _dt(since), s, f, reason, _dt(rec))  # type: ignore[arg-type]
            for p, n, up, since, s, f, reason, rec in rows
        }

    def put_health(self, pool: str, node: str, h: NodeHealth) -> None:
        with self._guard():
            self.conn.execute(
                "INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (pool, node, int(h.up), _ts(h.since), h.successes, h.failures, h.reason, _ts(h.recovered_at)),
            )

    # --- drains ---------------------------------------------------------------------------

    def drains(self) -> dict[tuple[str, str], tuple[str, datetime]]:
        with self._guard():
            rows = self.conn.execute("SELECT pool, node, reason, at FROM drains").fetchall()
        return {(p, n): (r, _dt(at)) for p, n, r, at in rows}  # type: ignore[misc]

    def drain(self, pool: str, node: str, reason: str, now: datetime) -> None:
        with self.transaction(), self._guard():
            self.conn.execute("INSERT OR REPLACE INTO drains VALUES (?, ?, ?, ?)", (pool, node, reason, _ts(now)))
            self.add_event(now, pool, node, "drain", None, "drained", reason)

    def enable(self, pool: str, node: str, now: datetime) -> bool:
        with self.transaction(), self._guard():
            cur = self.conn.execute("DELETE FROM drains WHERE pool = ? AND node = ?", (pool, node))
            if cur.rowcount:
                self.add_event(now, pool, node, "enable", "drained", "enabled", "enabled by operator")
        return bool(cur.rowcount)

    # --- cached check results (dnsbl runs at its own interval) -----------------------------

    def check_results(self) -> dict[tuple[str, str, str], tuple[datetime, dict[str, Any]]]:
        with self._guard():
            rows = self.conn.execute("SELECT pool, node, slot, at, result FROM checks").fetchall()
        return {(p, n, s): (_dt(at), json.loads(r)) for p, n, s, at, r in rows}  # type: ignore[misc]

    def put_check_result(self, pool: str, node: str, slot: str, at: datetime, result: dict[str, Any]) -> None:
        with self._guard():
            self.conn.execute(
                "INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?)",
                (pool, node, slot, _ts(at), json.dumps(result, default=str)),
            )

    # --- events ---------------------------------------------------------------------------

    def add_event(self, at: datetime, pool: str, node: str, kind: str,
                  from_state: str | None, to_state: str | None, reason: str) -> None:
        with self._guard():
            self.conn.execute(
                "INSERT INTO events (at, pool, node, kind, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_ts(at), pool, node, kind, from_state, to_state, reason),
            )

    def events(self, limit: int = 50, pool: str | None = None, node: str | None = None) -> list[Event]:
        sql = "SELECT at, pool, node, kind, from_state, to_state, reason FROM events"
        args: list[Any] = []
        where = []
        if pool:
            where.append("pool = ?")
            args.append(pool)
        if node:
            where.append("node = ?")
            args.append(node)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._guard():
            rows = self.conn.execute(sql, args).fetchall()
        return [Event(_dt(at), p, n, k, f, t, r) for at, p, n, k, f, t, r in reversed(rows)]  # type: ignore[arg-type]
