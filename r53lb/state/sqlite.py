"""The embedded state store: health counters, drains, reputation, events. One SQLite file."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..core.health import NodeHealth

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


class StateError(Exception):
    """The state store cannot be used (locked by another run, unwritable)."""


@dataclass(frozen=True)
class Event:
    at: datetime
    pool: str
    node: str
    kind: str  # health | weight | drain | enable | quarantine | hold | alert | state
    from_state: str | None
    to_state: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "pool": self.pool, "node": self.node, "kind": self.kind,
                "from": self.from_state, "to": self.to_state, "reason": self.reason}


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(timezone.utc).isoformat()


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


class StateStore:
    """Open with `StateStore.open(path)`; a corrupted file is moved aside and rebuilt, loudly."""

    def __init__(self, path: Path, conn: sqlite3.Connection, rebuilt: str | None = None):
        self.path = path
        self.conn = conn
        self.rebuilt = rebuilt  # why the file was rebuilt this time, if it was
        # `run` reconciles a zone in a worker thread: one connection, used by one thread at a time.
        self._lock = threading.RLock()

    # --- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, now: datetime | None = None) -> "StateStore":
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"state: cannot create {path.parent}: {e.strerror or e}") from None
        rebuilt = None
        try:
            conn = cls._connect(path)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise StateError(f"state: {path} is locked by another r53lb process") from None
            if isinstance(e, sqlite3.OperationalError) and "unable to open" in str(e):
                raise StateError(f"state: cannot open {path}: {e}") from None
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            for suffix in ("-wal", "-shm", "-journal"):
                side = Path(str(path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(aside) + suffix))
            rebuilt = f"state file {path} was unreadable ({e}); moved to {aside.name} and rebuilt from Route 53"
            log.error(rebuilt)
            conn = cls._connect(path)
        store = cls(path, conn, rebuilt)
        if rebuilt:
            store.add_event(now or datetime.now(timezone.utc), "-", "-", "state", None, None, rebuilt)
        return store

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {row[0] if row else 'no answer'}")
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def snapshot(self) -> "StateStore":
        """An in-memory copy: `plan` and `--dry-run` run the whole cycle against it and record nothing."""
        mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.conn.backup(mem)
        return StateStore(self.path, mem)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def exclusive(self, wait: float = 0.0) -> Iterator[None]:
        """One reconciling process at a time per state file; a second waits `wait` seconds, then fails."""
        lock_path = Path(str(self.path) + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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

    # --- small values (the alert watcher's state) ----------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_meta(self, key: str, value: str) -> None:
        with self._lock:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- health ---------------------------------------------------------------------------

    def health(self) -> dict[tuple[str, str], NodeHealth]:
        rows = self.conn.execute(
            "SELECT pool, node, up, since, successes, failures, reason, recovered_at FROM health"
        )
        return {
            (p, n): NodeHealth(bool(up), _dt(since), s, f, reason, _dt(rec))  # type: ignore[arg-type]
            for p, n, up, since, s, f, reason, rec in rows
        }

    def put_health(self, pool: str, node: str, h: NodeHealth) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (pool, node, int(h.up), _ts(h.since), h.successes, h.failures, h.reason, _ts(h.recovered_at)),
        )

    # --- drains ---------------------------------------------------------------------------

    def drains(self) -> dict[tuple[str, str], tuple[str, datetime]]:
        rows = self.conn.execute("SELECT pool, node, reason, at FROM drains")
        return {(p, n): (r, _dt(at)) for p, n, r, at in rows}  # type: ignore[misc]

    def drain(self, pool: str, node: str, reason: str, now: datetime) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO drains VALUES (?, ?, ?, ?)", (pool, node, reason, _ts(now)))
            self.add_event(now, pool, node, "drain", None, "drained", reason)

    def enable(self, pool: str, node: str, now: datetime) -> bool:
        with self.transaction():
            cur = self.conn.execute("DELETE FROM drains WHERE pool = ? AND node = ?", (pool, node))
            if cur.rowcount:
                self.add_event(now, pool, node, "enable", "drained", "enabled", "enabled by operator")
        return bool(cur.rowcount)

    # --- cached check results (dnsbl runs at its own interval) -----------------------------

    def check_results(self) -> dict[tuple[str, str, str], tuple[datetime, dict[str, Any]]]:
        rows = self.conn.execute("SELECT pool, node, slot, at, result FROM checks")
        return {(p, n, s): (_dt(at), json.loads(r)) for p, n, s, at, r in rows}  # type: ignore[misc]

    def put_check_result(self, pool: str, node: str, slot: str, at: datetime, result: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?)",
            (pool, node, slot, _ts(at), json.dumps(result, default=str)),
        )

    # --- events ---------------------------------------------------------------------------

    def add_event(self, at: datetime, pool: str, node: str, kind: str,
                  from_state: str | None, to_state: str | None, reason: str) -> None:
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
        rows = self.conn.execute(sql, args).fetchall()
        return [Event(_dt(at), p, n, k, f, t, r) for at, p, n, k, f, t, r in reversed(rows)]  # type: ignore[arg-type]
