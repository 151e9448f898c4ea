"""Finding a signature corpus on disk and splitting it by writer.

:func:`load` recognises two layouts and returns one table with a row per
file and columns ``writer`` (str), ``label`` (``genuine``/``skilled``),
``session`` (nullable int), ``number`` (order of the file within its writer
and label, 1-based) and ``path`` (absolute):

- an **SVC2004 folder**: files ``U{u}S{s}.TXT``; S1-S20 are genuine
  signatures of writer u (S1-S10 session 1, S11-S20 session 2), S21-S40 are
  skilled forgeries of writer u (no session);
- any folder with a **manifest.csv**: ``path,writer,label[,session]``, paths
  relative to the manifest's folder; rows keep the manifest's order.

:func:`writer_folds` and :func:`split_writers` give seeded writer-disjoint
splits: no writer is ever on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .atomic import atomic_write_text
from .formats import InputError, SignatureFormatError, read_signature
from .signature import LABELS, Signature

MANIFEST = "manifest.csv"
SVC_PATTERN = re.compile(r"^U(\d+)S(\d+)\.TXT$", re.IGNORECASE)
COLUMNS = ["writer", "label", "session", "number", "path"]


class DatasetError(InputError):
    """A corpus folder or manifest that cannot be used; names the file and line."""


def _natural_key(s: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


def _table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["session"] = df["session"].astype("Int64")
    df["number"] = df["number"].astype(int)
    order = sorted(range(len(df)), key=lambda i: (_natural_key(df.at[i, "writer"]), df.at[i, "label"] != "genuine", df.at[i, "number"]))
    return df.iloc[order].reset_index(drop=True)


def load_svc2004(root: str | os.PathLike) -> pd.DataFrame:
    """Table of an SVC2004 folder (``U{u}S{s}.TXT``, s = 1..40)."""
    root = Path(root)
    rows = []
    for p in root.iterdir():
        m = SVC_PATTERN.match(p.name)
        if not m:
            continue
        u, s = int(m.group(1)), int(m.group(2))
        if not 1 <= s <= 40:
            raise DatasetError(p, f"sample number S{s} is outside S1-S40 (S1-S20 genuine, S21-S40 skilled forgeries)")
        genuine = s <= 20
        rows.append(
            {
                "writer": f"U{u}",
                "label": "genuine" if genuine else "skilled",
                "session": (1 if s <= 10 else 2) if genuine else None,
                "number": s if genuine else s - 20,
                "path": str(p.resolve()),
            }
        )
    if not rows:
        raise DatasetError(root, "no SVC2004 files (U{u}S{s}.TXT) found")
    return _table(rows)


def load_manifest(manifest: str | os.PathLike) -> pd.DataFrame:
    """Table of a ``manifest.csv`` (``path,writer,label[,session]``)."""
    manifest = Path(manifest)
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(manifest, f"cannot read manifest: {e}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows, seen, counters = [], {}, {}
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip().lower() for f in fields]
                missing = [c for c in ("path", "writer", "label") if c not in header]
                if missing:
                    raise DatasetError(manifest, f"header lacks column(s) {', '.join(missing)}; expected path,writer,label[,session]", line)
                continue
            if len(fields) != len(header):
                raise DatasetError(manifest, f"{len(fields)} fields where the header has {len(header)}", line)
            rec = dict(zip(header, (f.strip() for f in fields)))
            if not rec["writer"]:
                raise DatasetError(manifest, "empty writer", line)
            if rec["label"] not in LABELS:
                raise DatasetError(manifest, f"label {rec['label']!r} is not one of {', '.join(LABELS)}", line)
            session = None
            if rec.get("session"):
                try:
                    session = int(rec["session"])
                except ValueError:
                    raise DatasetError(manifest, f"session {rec['session']!r} is not an integer", line) from None
            path = (manifest.parent / rec["path"]).resolve()
            if not rec["path"] or not path.is_file():
                raise DatasetError(manifest, f"file not found: {rec['path']!r}", line)
            if str(path) in seen:
                raise DatasetError(manifest, f"{rec['path']!r} is listed twice (also on line {seen[str(path)]})", line)
            seen[str(path)] = line
            key = (rec["writer"], rec["label"])
            counters[key] = counters.get(key, 0) + 1
            rows.append({"writer": rec["writer"], "label": rec["label"], "session": session, "number": counters[key], "path": str(path)})
    except csv.Error as e:
        raise DatasetError(manifest, f"malformed CSV: {e}", reader.line_num) from None
    if not rows:
        raise DatasetError(manifest, "manifest lists no files")
    return _table(rows)


def load(root: str | os.PathLike) -> pd.DataFrame:
    """Table of the corpus at ``root``: a manifest.csv (or a folder holding one), or an SVC2004 folder."""
    root = Path(root)
    if root.is_file() and root.name.lower().endswith(".csv"):
        return load_manifest(root)
    if not root.is_dir():
        raise DatasetError(root, "no such folder")
    if (root / MANIFEST).is_file():
        return load_manifest(root / MANIFEST)
    if any(SVC_PATTERN.match(p.name) for p in root.iterdir()):
        return load_svc2004(root)
    raise DatasetError(root, f"not a corpus: no {MANIFEST} and no SVC2004 files (U{{u}}S{{s}}.TXT); see data/README.md")


def write_manifest(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write ``manifest.csv`` atomically from rows with path, writer, label and session.

    Paths inside the manifest's folder are written relative to it, others absolute.
    """
    path = Path(path)
    base = path.parent.resolve()
    lines = ["path,writer,label,session"]
    for r in rows:
        p = Path(r["path"])
        if p.is_absolute() and p.resolve().is_relative_to(base):
            p = p.resolve().relative_to(base)
        session = r.get("session")
        lines.append(f"{p.as_posix()},{r['writer']},{r['label']},{'' if session is None or pd.isna(session) else int(session)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def read_row(row: pd.Series | dict) -> Signature:
    """Read the file of one table row, with the row's writer, label and session."""
    session = row["session"]
    return read_signature(
        row["path"],
        writer=str(row["writer"]),
        label=str(row["label"]),
        session=None if pd.isna(session) else int(session),
    )


def load_signatures(table: pd.DataFrame) -> list[Signature]:
    """Read every file of ``table`` (in table order). Raises the first `SignatureFormatError`."""
    return [read_row(r) for r in table.to_dict("records")]


def fingerprint(table: pd.DataFrame) -> str:
    """SHA-256 over writers, labels, sessions and file contents: the identity of a corpus.

    Paths do not enter it, so the same corpus at another location has the same fingerprint.
    """
    h = hashlib.sha256()
    for r in table.to_dict("records"):
        h.update(f"{r['writer']}\t{r['label']}\t{r['session']}\t{r['number']}\n".encode())
        h.update(hashlib.sha256(Path(r["path"]).read_bytes()).digest())
    return h.hexdigest()


def writers(table: pd.DataFrame) -> list[str]:
    """The writers of ``table`` in natural order (U2 before U10)."""
    return sorted(table["writer"].unique().tolist(), key=_natural_key)


def writer_folds(names: Iterable[str], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Seeded writer-disjoint k-fold split: ``[(train_writers, test_writers), ...]``.

    Writers are shuffled by ``numpy.random.default_rng(seed)`` and dealt into
    k folds whose sizes differ by at most one.

    >>> folds = writer_folds(["a", "b", "c", "d"], k=2, seed=0)
    >>> sorted(sum((test for _, test in folds), []))
    ['a', 'b', 'c', 'd']
    """
    names = sorted(set(names), key=_natural_key)
    if not 2 <= k <= len(names):
        raise ValueError(f"k must be between 2 and the number of writers ({len(names)}), got {k}")
    perm = np.random.default_rng(seed).permutation(len(names))
    chunks = np.array_split(perm, k)
    out = []
    for chunk in chunks:
        test = set(chunk.tolist())
        out.append(([n for i, n in enumerate(names) if i not in test], [n for i, n in enumerate(names) if i in test]))
    return out


def split_writers(names: Sequence[str], n_holdout: int, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of writers into ``(rest, holdout)`` with ``n_holdout`` writers held out."""
    names = sorted(set(names), key=_natural_key)
    if not 1 <= n_holdout < len(names):
        raise ValueError(f"n_holdout must be between 1 and {len(names) - 1}, got {n_holdout}")
    perm = np.random.default_rng(seed).permutation(len(names))
    hold = set(perm[:n_holdout].tolist())
    rest = [n for i, n in enumerate(names) if i not in hold]
    return rest, [n for i, n in enumerate(names) if i in hold]


__all__ = [
    "DatasetError",
    "SignatureFormatError",
    "fingerprint",
    "load",
    "load_manifest",
    "load_signatures",
    "load_svc2004",
    "read_row",
    "split_writers",
    "writer_folds",
    "writers",
]
