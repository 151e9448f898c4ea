"""Where templates live: one SQLite file of writers and their reference embeddings.

A store is bound to the model that made its first template (its
fingerprint, :func:`tdnn_siamese.verifier.model_fingerprint`): embeddings
from another model are not comparable, so opening the store with another
model is refused. Tables::

    meta(key, value)                      format, version, model fingerprint, embedding size
    writers(writer, created, updated, stats)          stats: JSON (references; spread and its distance)
    refs(id, writer, source, sha256, added, embedding)  embedding: float32 little-endian blob

The file uses SQLite's write-ahead log, so readers never block a writer and
several processes may enroll at once (each waits up to ``timeout`` seconds
for the write lock). Every change (an enrollment, a deletion) is one
transaction: a process killed half-way leaves the writer as it was.

>>> import tempfile, numpy as np
>>> with tempfile.TemporaryDirectory() as d, TemplateStore(d + "/s.db", "f" * 64) as s:
...     s.add("alice", np.ones((2, 4), np.float32), ["a1.csv", "a2.csv"], ["h1", "h2"])
...     s.template_embeddings("alice").shape
2
(2, 4)
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np

from .formats import InputError

logger = logging.getLogger(__name__)

FORMAT = "tdnn-siamese-store"
FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS writers (
    writer TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, stats TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    writer TEXT NOT NULL REFERENCES writers(writer) ON DELETE CASCADE,
    source TEXT NOT NULL, sha256 TEXT NOT NULL, added REAL NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS refs_writer ON refs(writer);
"""


class StoreError(InputError):
    """A store file that cannot be used: not a store, another model's, an unknown writer."""


@dataclass(frozen=True)
class WriterInfo:
    """One enrolled writer, as ``store list`` and ``store show`` report it."""

    writer: str
    n_references: int
    created: float
    updated: float
    stats: dict


@dataclass(frozen=True)
class Reference:
    id: int
    source: str
    sha256: str
    added: float


def _blob(e: np.ndarray) -> bytes:
    return np.ascontiguousarray(e, dtype="<f4").tobytes()


def _stats(emb: np.ndarray, spread: tuple[str, Callable[[np.ndarray], float | None]] | None) -> dict:
    """Summary of a writer's references: their count and, given the model's distance ``(name, function)``, their
    spread in it (the mean pairwise distance; a store alone cannot know how its model compares embeddings)."""
    stats: dict = {"references": len(emb)}
    if spread is not None:
        stats["spread"], stats["spread_distance"] = spread[1](emb), spread[0]
    return stats


class TemplateStore:
    """An open store. ``fingerprint`` is the model's; a store made by another model is refused.

    ``fingerprint=None`` opens an existing store for listing and deleting
    only (no model needed). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path, fingerprint: str | None, *, create: bool = True, timeout: float = 60.0):
        self.path = Path(path)
        self.fingerprint = fingerprint
        if not self.path.exists() and (not create or fingerprint is None):
            raise StoreError(self.path, "no such template store")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(self.path, "not a file")
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)  # explicit transactions only
            tables = {t for (t,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:  # someone else's database: change nothing
                self.close()
                raise StoreError(self.path, "an SQLite file, but not a tdnn-siamese template store")
            self._db.execute("PRAGMA foreign_keys = ON")
            mode = self._enter_wal(timeout)
            if mode.lower() != "wal":
                logger.warning("%s: SQLite refused write-ahead logging (journal mode %s)", self.path, mode)
            self._db.execute("PRAGMA synchronous = FULL")
            with self._transaction():
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(stmt)
                if fingerprint is not None:
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?), ('format_version', ?), ('model_fingerprint', ?)",
                                     (FORMAT, str(FORMAT_VERSION), fingerprint))
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            self._close_quietly()
            raise StoreError(self.path, f"not a readable template store ({e})") from None
        if meta.get("format") != FORMAT:
            self.close()
            raise StoreError(self.path, "not a tdnn-siamese template store")
        if meta.get("format_version") != str(FORMAT_VERSION):
            self.close()
            raise StoreError(self.path, f"store format version {meta.get('format_version')}; this version reads {FORMAT_VERSION}")
        if fingerprint is not None and meta["model_fingerprint"] != fingerprint:
            self.close()
            raise StoreError(self.path, f"made with another model (fingerprint {meta['model_fingerprint'][:12]}, this model "
                             f"{fingerprint[:12]}); its templates are not comparable: use that model, or enroll into a new store")

    # ---- plumbing

    def _enter_wal(self, timeout: float) -> str:
        """Switch the file to write-ahead logging; returns the journal mode SQLite ended in.

        The switch needs an exclusive lock, and SQLite answers "database is
        locked" at once, without waiting in its busy handler, while another
        connection holds the write lock (to avoid a deadlock); two processes
        opening a new store together hit this in CI. So retry until
        ``timeout``, as long as every other statement waits.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as e:
                if not e.sqlite_errorname.startswith("SQLITE_BUSY") or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock now, so processes never deadlock upgrading."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _close_quietly(self) -> None:
        try:
            self._db.close()
        except Exception:  # noqa: BLE001 - closing after a failure; the first error is what matters
            pass

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TemplateStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- changes (each one transaction)

    def add(self, writer: str, embeddings: np.ndarray, sources: Sequence[str], hashes: Sequence[str], replace: bool = False,
            spread: tuple[str, Callable[[np.ndarray], float | None]] | None = None) -> int:
        """Add references to ``writer`` (enrolling it if new); returns how many were added.

        A reference whose content hash the writer already has is skipped
        with a warning. With ``replace`` the writer's old references go first.
        ``spread``: the model's distance, ``(name, embeddings -> mean pairwise
        distance)`` (:meth:`Verifier.spread`), recorded over all the writer's
        references in its stats.
        """
        embeddings = np.asarray(embeddings, np.float32)
        if self.fingerprint is None:
            raise StoreError(self.path, "opened without a model: cannot enroll")
        if not writer:
            raise StoreError(self.path, "a writer needs a non-empty name")
        if embeddings.ndim != 2 or not len(embeddings) or len(embeddings) != len(sources) or len(sources) != len(hashes):
            raise StoreError(self.path, "enrollment needs at least one reference, with one source and hash each")
        if not np.isfinite(embeddings).all():
            raise StoreError(self.path, f"writer {writer!r}: a reference embedding is not finite")
        now = time.time()
        with self._transaction():
            self._check_dim(embeddings.shape[1])
            if replace:
                self._db.execute("DELETE FROM writers WHERE writer = ?", (writer,))
            self._db.execute("INSERT OR IGNORE INTO writers VALUES (?, ?, ?, '{}')", (writer, now, now))
            known = {h for (h,) in self._db.execute("SELECT sha256 FROM refs WHERE writer = ?", (writer,))}
            added = 0
            for e, src, h in zip(embeddings, sources, hashes):
                if h in known:
                    logger.warning("%s: already a reference of writer %s (same content): skipped", src, writer)
                    continue
                known.add(h)
                self._db.execute("INSERT INTO refs (writer, source, sha256, added, embedding) VALUES (?, ?, ?, ?, ?)",
                                 (writer, str(src), h, now, _blob(e)))
                added += 1
            emb = self._embeddings(writer)
            self._db.execute("UPDATE writers SET updated = ?, stats = ? WHERE writer = ?", (now, json.dumps(_stats(emb, spread)), writer))
        return added

    def delete(self, writer: str) -> int:
        """Remove a writer and its references; returns how many references went."""
        with self._transaction():
            n = self._count(writer)
            if not self._db.execute("SELECT 1 FROM writers WHERE writer = ?", (writer,)).fetchone():
                raise self._unknown(writer)
            self._db.execute("DELETE FROM writers WHERE writer = ?", (writer,))
        return n

    # ---- reading

    def writers(self) -> list[WriterInfo]:
        rows = self._db.execute("SELECT w.writer, COUNT(r.id), w.created, w.updated, w.stats FROM writers w "
                                "LEFT JOIN refs r ON r.writer = w.writer GROUP BY w.writer ORDER BY w.writer").fetchall()
        return [WriterInfo(w, n, c, u, json.loads(s)) for w, n, c, u, s in rows]

    def info(self, writer: str) -> tuple[WriterInfo, list[Reference]]:
        for wi in self.writers():
            if wi.writer == writer:
                refs = [Reference(*r) for r in self._db.execute(
                    "SELECT id, source, sha256, added FROM refs WHERE writer = ? ORDER BY id", (writer,))]
                return wi, refs
        raise self._unknown(writer)

    def template_embeddings(self, writer: str) -> np.ndarray:
        """The writer's reference embeddings (K, D) float32; an unknown writer is an error."""
        emb = self._embeddings(writer)
        if not len(emb):
            raise self._unknown(writer)
        return emb

    def sources(self, writer: str) -> list[str]:
        return [s for (s,) in self._db.execute("SELECT source FROM refs WHERE writer = ? ORDER BY id", (writer,))]

    def db_integrity(self) -> str:
        """SQLite's own consistency check: ``"ok"`` for a sound file."""
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    # ---- helpers

    def _embeddings(self, writer: str) -> np.ndarray:
        blobs = [b for (b,) in self._db.execute("SELECT embedding FROM refs WHERE writer = ? ORDER BY id", (writer,))]
        dim = self.meta().get("embedding_dim")
        d = int(dim) if dim else 0
        return np.stack([np.frombuffer(b, "<f4") for b in blobs]).astype(np.float32) if blobs else np.empty((0, d), np.float32)

    def _check_dim(self, d: int) -> None:
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('embedding_dim', ?)", (str(d),))
        stored = int(self.meta()["embedding_dim"])
        if stored != d:
            raise StoreError(self.path, f"holds {stored}-d embeddings, not {d}-d")

    def _count(self, writer: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM refs WHERE writer = ?", (writer,)).fetchone()[0]

    def _unknown(self, writer: str) -> StoreError:
        names = [w for (w,) in self._db.execute("SELECT writer FROM writers ORDER BY writer LIMIT 11")]
        known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
        return StoreError(self.path, f"writer {writer!r} is not enrolled (enrolled: {known})")
