"""Readers and writers of pen-recording files, chosen by one explicit table.

Formats (``FORMATS``, keyed by name; ``EXTENSIONS`` maps file suffixes to names):

- ``svc2004``: SVC2004 TXT. Line 1 is the point count, then one point per line,
  ``X Y T button`` (Task 1) or ``X Y T button azimuth altitude pressure``
  (Task 2). ``button > 0`` means pen down (the public files use 0..5).
- ``csv`` / ``tsv``: a header row with case-insensitive columns ``t`` (ms),
  ``x``, ``y`` and optional ``pen_down``, ``pressure``, ``azimuth``,
  ``altitude``. Without ``pen_down`` the pen is down where pressure > 0, or
  always when there is no pressure either. Without ``t`` the points are taken
  as uniformly sampled at ``sample_rate_hz`` (default 100 Hz).
- ``json``: ``{"points": [{"t": .., "x": .., "y": .., "pressure": .., ...}],
  "writer": .., "label": .., "session": ..}``, the shape a browser's Pointer
  Events capture produces; a bare list of points is accepted too.

Every malformed input raises :class:`SignatureFormatError` naming the file,
the line where there is one, and what is wrong. Timestamps that go backwards
or repeat are repaired (stable sort, later duplicates dropped) and logged.
Entry points: :func:`read_signature` and :func:`write_signature`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .atomic import atomic_write_text
from .signature import LABELS, OPTIONAL_CHANNELS, Signature

logger = logging.getLogger(__name__)

MAX_BYTES = 50 * 1024 * 1024
MAX_POINTS = 1_000_000
MIN_POINTS = 10
MAX_ABS_VALUE = 1e15  # larger values overflow later arithmetic; no tablet reports them
STEP_RANGE_MS = (0.2, 1000.0)  # plausible median sampling interval (5 kHz .. 1 Hz)
DEFAULT_RATE_HZ = 100.0
CSV_COLUMNS = ("t", "x", "y", "pen_down", *OPTIONAL_CHANNELS)


class InputError(ValueError):
    """Bad user input located in a file: ``str(err)`` reads ``path, line N: reason``.

    Attributes ``path``, ``line`` (1-based, or None) and ``reason`` let callers
    format their own message.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, line: int | None = None):
        self.path = str(path) if path is not None else "<input>"
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")


class SignatureFormatError(InputError):
    """A pen-recording file that cannot be turned into a valid `Signature`."""


# --------------------------------------------------------------------------- common checks


def build_signature(
    path: str | os.PathLike | None,
    columns: dict[str, np.ndarray],
    *,
    row_lines: np.ndarray | None = None,
    row_name: str = "point",
    writer: str | None = None,
    label: str | None = None,
    session: int | None = None,
) -> Signature:
    """Validate parsed columns and build a `Signature`, repairing timestamp order.

    ``columns`` holds float arrays ``t``, ``x``, ``y``, ``pen_down`` (bool) and
    any of the optional channels. ``row_lines[i]`` is the file line of row i,
    used in messages; without it rows are named ``{row_name}s[i]``.
    """

    def where(i: int) -> tuple[int | None, str]:
        if row_lines is not None:
            return int(row_lines[i]), ""
        return None, f"{row_name}s[{i}]: "

    n = len(columns["x"])
    if n == 0:
        raise SignatureFormatError(path, "no points")
    if n > MAX_POINTS:
        raise SignatureFormatError(path, f"{n} points; at most {MAX_POINTS} are accepted")
    for name, arr in columns.items():
        if name == "pen_down":
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            line, prefix = where(i)
            raise SignatureFormatError(path, f"{prefix}column '{name}' is {arr[i]} (NaN and infinity are not accepted)", line)
        big = np.abs(arr) > MAX_ABS_VALUE
        if big.any():
            i = int(np.argmax(big))
            line, prefix = where(i)
            raise SignatureFormatError(path, f"{prefix}column '{name}' is {arr[i]:.6g}, beyond the accepted magnitude {MAX_ABS_VALUE:.0e}", line)
    t = columns["t"]
    order = np.argsort(t, kind="stable")
    n_back = int(np.count_nonzero(np.diff(t) < 0))
    if n_back:
        logger.info("%s: %d timestamp(s) go backwards; points re-sorted by time (stable)", path, n_back)
        columns = {k: v[order] for k, v in columns.items()}
    keep = np.concatenate([[True], np.diff(columns["t"]) > 0])
    n_dup = n - int(np.count_nonzero(keep))
    if n_dup:
        logger.debug("%s: %d repeated timestamp(s); later duplicates dropped", path, n_dup)
        columns = {k: v[keep] for k, v in columns.items()}
    n = len(columns["t"])
    if n < MIN_POINTS:
        extra = f" after dropping {n_dup} repeated timestamps" if n_dup else ""
        raise SignatureFormatError(path, f"only {n} points{extra}; at least {MIN_POINTS} are needed")
    step = float(np.median(np.diff(columns["t"])))
    if not STEP_RANGE_MS[0] <= step <= STEP_RANGE_MS[1]:
        raise SignatureFormatError(
            path,
            f"median time step is {step:.4g} ms, outside {STEP_RANGE_MS[0]}..{STEP_RANGE_MS[1]:g} ms; "
            "timestamps must be in milliseconds (are they in seconds or microseconds?)",
        )
    down = columns["pen_down"]
    if not down.any():
        raise SignatureFormatError(path, "no pen-down point: the pen is up at every point")
    xd, yd = columns["x"][down], columns["y"][down]
    if np.ptp(xd) == 0 and np.ptp(yd) == 0:
        raise SignatureFormatError(path, "the pen never moves: every pen-down point lies at one position")
    return Signature(
        t=columns["t"],
        x=columns["x"],
        y=columns["y"],
        pen_down=down,
        **{c: columns.get(c) for c in OPTIONAL_CHANNELS},
        writer=writer,
        label=label,
        session=session,
        source=None if path is None else str(path),
    )


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SignatureFormatError(path, f"cannot read file: {e.strerror or e}") from None
    if size > MAX_BYTES:
        raise SignatureFormatError(path, f"file is {size / 2**20:.1f} MB; at most {MAX_BYTES // 2**20} MB are accepted")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SignatureFormatError(path, f"cannot read file: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SignatureFormatError(path, f"not UTF-8 text (byte {e.start})", line) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SignatureFormatError(path, "binary data (NUL byte) in a text file", line)
    if not text.strip():
        raise SignatureFormatError(path, "empty file")
    return text


def _to_float_table(path: Path, rows: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    """Convert string rows (all the same width) to a float array, naming the first bad field."""
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    except (ValueError, OverflowError):
        pass
    out = np.empty((len(rows), len(names)))  # slow path: the same conversion, field by field
    for i, (row, line) in enumerate(zip(rows, lines)):
        for j, (value, name) in enumerate(zip(row, names)):
            try:
                out[i, j] = float(value)
            except (ValueError, OverflowError):
                raise SignatureFormatError(path, f"column '{name}' is not a number: {value[:40]!r}", line) from None
    return out


def _check_metadata(path: Path, given: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """Merge metadata passed by the caller (a manifest) with metadata in the file."""
    out = dict(given)
    for key, value in found.items():
        if value is None:
            continue
        if out.get(key) is None:
            out[key] = value
        elif str(out[key]) != str(value):
            raise SignatureFormatError(path, f"file says {key} {value!r} but the caller (manifest) says {out[key]!r}")
    if out.get("label") is not None and out["label"] not in LABELS:
        raise SignatureFormatError(path, f"label {out['label']!r} is not one of {', '.join(LABELS)}")
    return out


# --------------------------------------------------------------------------- SVC2004 TXT

SVC_COLUMNS = {4: ("x", "y", "t", "button"), 7: ("x", "y", "t", "button", "azimuth", "altitude", "pressure")}


_PLAIN = np.zeros(256, dtype=bool)  # the bytes of a plain numeric table: digits, sign, point, exponent, blank, newline
_PLAIN[np.frombuffer(b"0123456789+-.eE \t\r\n", dtype=np.uint8)] = True


def _fast_table(body: str, declared: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The point rows of a plain, well-formed SVC2004 body as (N, C) floats and their line numbers, or None.

    One ``str.split`` and one conversion for the whole file; the row widths
    are counted on the bytes. None sends the file to the line-by-line reader,
    which finds and names whatever is wrong.
    """
    raw = np.frombuffer(body.encode("ascii", "replace"), dtype=np.uint8)
    if not len(raw) or not _PLAIN[raw].all() or body.count("\r") != body.count("\r\n"):  # a lone CR ends a line
        return None
    blank = (raw == 32) | (raw == 9) | (raw == 10) | (raw == 13)
    starts = ~blank
    starts[1:] &= blank[:-1]  # first byte of each field
    line = np.cumsum(raw == 10)[starts]  # line of each field (0 = the body's first line)
    rows, widths = np.unique(line, return_counts=True)
    if len(rows) != declared or not len(rows) or not (widths == widths[0]).all() or int(widths[0]) not in SVC_COLUMNS:
        return None
    fields = body.split()
    try:
        values = np.array(fields, dtype=np.int64).astype(np.float64)  # tablets report integers
    except (ValueError, OverflowError):
        try:
            values = np.array(fields, dtype=np.float64)
        except (ValueError, OverflowError):
            return None
    return values.reshape(len(rows), int(widths[0])), rows + 2


def read_svc2004(path: str | os.PathLike, **meta: Any) -> Signature:
    """Read an SVC2004 Task 1 (4 columns) or Task 2 (7 columns) TXT file."""
    path = Path(path)
    text = _read_text(path)
    head, _, body = text.partition("\n")
    count = head.strip()
    fast = _fast_table(body, int(count)) if count.isascii() and count.isdigit() and int(count) <= MAX_POINTS else None
    if fast is not None:
        table, lines = fast
        names = SVC_COLUMNS[table.shape[1]]
        cols = {name: table[:, j] for j, name in enumerate(names)}
        cols["pen_down"] = cols.pop("button") > 0
        return build_signature(path, cols, row_lines=lines, **_check_metadata(path, meta, {}))
    all_lines = text.splitlines()
    header = all_lines[0].strip()
    try:
        declared = int(header)
    except ValueError:
        raise SignatureFormatError(path, f"line 1 must be the point count, got {header[:40]!r}", 1) from None
    if declared < 0:
        raise SignatureFormatError(path, f"negative point count {declared}", 1)
    if declared > MAX_POINTS:
        raise SignatureFormatError(path, f"declares {declared} points; at most {MAX_POINTS} are accepted", 1)
    rows, lines = [], []
    for i, ln in enumerate(all_lines[1:], start=2):
        fields = ln.split()
        if fields:
            rows.append(fields)
            lines.append(i)
    if len(rows) != declared:
        raise SignatureFormatError(path, f"line 1 declares {declared} points but the file has {len(rows)} point rows")
    if not rows:
        raise SignatureFormatError(path, "no points")
    ncol = len(rows[0])
    if ncol not in SVC_COLUMNS:
        raise SignatureFormatError(path, f"{ncol} columns; SVC2004 has 4 (Task 1: X Y T button) or 7 (Task 2: X Y T button azimuth altitude pressure)", lines[0])
    for fields, line in zip(rows, lines):
        if len(fields) != ncol:
            raise SignatureFormatError(path, f"{len(fields)} columns where the first point row has {ncol}", line)
    names = SVC_COLUMNS[ncol]
    table = _to_float_table(path, rows, lines, list(names))
    cols = {name: table[:, j] for j, name in enumerate(names)}
    cols["pen_down"] = cols.pop("button") > 0
    return build_signature(path, cols, row_lines=np.asarray(lines), **_check_metadata(path, meta, {}))


def write_svc2004(sig: Signature, path: str | os.PathLike) -> None:
    """Write Task 2 format when the signature has all three pen channels, else Task 1."""
    task2 = all(getattr(sig, c) is not None for c in OPTIONAL_CHANNELS)
    cols = [sig.x, sig.y, sig.t, sig.pen_down.astype(np.float64)]
    if task2:
        cols += [sig.azimuth, sig.altitude, sig.pressure]
    body = _format_rows(np.column_stack(cols), " ")
    atomic_write_text(path, f"{len(sig)}\n{body}")


# --------------------------------------------------------------------------- CSV / TSV


def _parse_pen_down(path: Path, values: list[str], lines: list[int]) -> np.ndarray:
    out = np.empty(len(values), dtype=bool)
    for i, (v, line) in enumerate(zip(values, lines)):
        s = v.strip().lower()
        if s in ("true", "yes"):
            out[i] = True
        elif s in ("false", "no"):
            out[i] = False
        else:
            try:
                f = float(s)
            except ValueError:
                raise SignatureFormatError(path, f"column 'pen_down' must be 0/1 or true/false, got {v[:40]!r}", line) from None
            if not math.isfinite(f):
                raise SignatureFormatError(path, f"column 'pen_down' is {v[:40]!r}", line)
            out[i] = f > 0
    return out


def _default_pen_down(pressure: np.ndarray | None, n: int) -> np.ndarray:
    """No pen_down column: pen down where pressure > 0, else always down."""
    return pressure > 0 if pressure is not None else np.ones(n, dtype=bool)


def _uniform_time(n: int, sample_rate_hz: float) -> np.ndarray:
    if not (math.isfinite(sample_rate_hz) and sample_rate_hz > 0):
        raise ValueError(f"sample_rate_hz must be a positive number, got {sample_rate_hz}")
    return np.arange(n, dtype=np.float64) * (1000.0 / sample_rate_hz)


def _read_delimited(path: str | os.PathLike, delimiter: str, sample_rate_hz: float, meta: dict[str, Any]) -> Signature:
    path = Path(path)
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header: list[str] | None = None
        rows, lines = [], []
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip().lower() for f in fields]
                header_line = reader.line_num
                continue
            rows.append(fields)
            lines.append(reader.line_num)
            if len(rows) > MAX_POINTS:
                raise SignatureFormatError(path, f"more than {MAX_POINTS} points", reader.line_num)
    except csv.Error as e:
        raise SignatureFormatError(path, f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {e}", reader.line_num) from None
    if header is None:
        raise SignatureFormatError(path, "empty file: no header row and no points (only separators or blank fields)")
    for name in header:
        if header.count(name) > 1:
            raise SignatureFormatError(path, f"column {name!r} appears twice in the header", header_line)
    missing = [c for c in ("x", "y") if c not in header]
    if missing:
        raise SignatureFormatError(
            path, f"header lacks column(s) {', '.join(missing)}; the first row must be a header naming t, x, y[, pen_down, pressure, azimuth, altitude]", header_line
        )
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        logger.debug("%s: ignoring unknown column(s) %s", path, unknown)
    if not rows:
        raise SignatureFormatError(path, "header but no points")
    for fields, line in zip(rows, lines):
        if len(fields) != len(header):
            raise SignatureFormatError(path, f"{len(fields)} fields where the header has {len(header)}", line)
    numeric = [c for c in header if c in CSV_COLUMNS and c != "pen_down"]
    idx = [header.index(c) for c in numeric]
    table = _to_float_table(path, [[r[i].strip() for i in idx] for r in rows], lines, numeric)
    cols = {c: table[:, j] for j, c in enumerate(numeric)}
    if "t" not in cols:
        cols["t"] = _uniform_time(len(rows), sample_rate_hz)
    if "pen_down" in header:
        j = header.index("pen_down")
        cols["pen_down"] = _parse_pen_down(path, [r[j] for r in rows], lines)
    else:
        cols["pen_down"] = _default_pen_down(cols.get("pressure"), len(rows))
    return build_signature(path, cols, row_lines=np.asarray(lines), **_check_metadata(path, meta, {}))


def read_csv(path: str | os.PathLike, *, sample_rate_hz: float = DEFAULT_RATE_HZ, **meta: Any) -> Signature:
    """Read a comma-separated file with a header (see module docstring)."""
    return _read_delimited(path, ",", sample_rate_hz, meta)


def read_tsv(path: str | os.PathLike, *, sample_rate_hz: float = DEFAULT_RATE_HZ, **meta: Any) -> Signature:
    """Read a tab-separated file with a header (see module docstring)."""
    return _read_delimited(path, "\t", sample_rate_hz, meta)


def _format_rows(table: np.ndarray, sep: str) -> str:
    buf = io.StringIO()
    np.savetxt(buf, table, fmt="%.15g", delimiter=sep)
    return buf.getvalue()


def _write_delimited(sig: Signature, path: str | os.PathLike, sep: str) -> None:
    names = ["t", "x", "y", "pen_down", *sig.channels]
    table = np.column_stack([getattr(sig, n).astype(np.float64) for n in names])
    atomic_write_text(path, sep.join(names) + "\n" + _format_rows(table, sep))


def write_csv(sig: Signature, path: str | os.PathLike) -> None:
    """Write ``t,x,y,pen_down`` plus the channels the signature has."""
    _write_delimited(sig, path, ",")


def write_tsv(sig: Signature, path: str | os.PathLike) -> None:
    """Tab-separated twin of :func:`write_csv`."""
    _write_delimited(sig, path, "\t")


# --------------------------------------------------------------------------- JSON


def _json_number(path: Path, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SignatureFormatError(path, f"{where} must be a number, got {json.dumps(value)[:40]}")
    try:
        f = float(value)
    except OverflowError:
        raise SignatureFormatError(path, f"{where} is too large") from None
    return f


def read_json(path: str | os.PathLike, *, sample_rate_hz: float = DEFAULT_RATE_HZ, **meta: Any) -> Signature:
    """Read a JSON capture (see module docstring)."""
    path = Path(path)
    text = _read_text(path)
    try:
        doc = json.loads(text, parse_constant=lambda c: float(c))
    except json.JSONDecodeError as e:
        raise SignatureFormatError(path, f"invalid JSON: {e.msg}", e.lineno) from None
    except ValueError as e:  # e.g. an integer literal with more digits than Python converts
        raise SignatureFormatError(path, f"invalid JSON: {e}") from None
    except RecursionError:
        raise SignatureFormatError(path, "invalid JSON: nested too deeply") from None
    found: dict[str, Any] = {}
    if isinstance(doc, dict):
        if "points" not in doc:
            raise SignatureFormatError(path, "JSON object has no 'points' list")
        points = doc["points"]
        for key in ("writer", "label", "session"):
            v = doc.get(key)
            if v is not None and (isinstance(v, (dict, list, bool)) or (key == "session" and not isinstance(v, int))):
                raise SignatureFormatError(path, f"'{key}' has an unexpected type: {json.dumps(v)[:40]}")
            found[key] = str(v) if key == "writer" and v is not None else v
    else:
        points = doc
    if not isinstance(points, list):
        raise SignatureFormatError(path, "'points' must be a list of point objects")
    if not points:
        raise SignatureFormatError(path, "no points")
    if len(points) > MAX_POINTS:
        raise SignatureFormatError(path, f"{len(points)} points; at most {MAX_POINTS} are accepted")
    if not isinstance(points[0], dict):
        raise SignatureFormatError(path, "points[0] is not an object")
    keys = [k for k in CSV_COLUMNS if k in points[0]]
    for k in ("x", "y"):
        if k not in keys:
            raise SignatureFormatError(path, f"points[0] has no '{k}'")
    cols: dict[str, list[float]] = {k: [] for k in keys}
    for i, p in enumerate(points):
        if not isinstance(p, dict):
            raise SignatureFormatError(path, f"points[{i}] is not an object")
        for k in keys:
            if k not in p:
                raise SignatureFormatError(path, f"points[{i}] lacks '{k}', which points[0] has")
            v = p[k]
            if k == "pen_down" and isinstance(v, bool):
                cols[k].append(float(v))
            else:
                cols[k].append(_json_number(path, v, f"points[{i}].{k}"))
        for k in CSV_COLUMNS:
            if k in p and k not in cols:
                raise SignatureFormatError(path, f"points[{i}] has '{k}', which points[0] lacks")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    n = len(points)
    if "t" not in arrays:
        arrays["t"] = _uniform_time(n, sample_rate_hz)
    if "pen_down" in arrays:
        if not np.isfinite(arrays["pen_down"]).all():
            raise SignatureFormatError(path, "'pen_down' must be true/false or 0/1")
        arrays["pen_down"] = arrays["pen_down"] > 0
    else:
        arrays["pen_down"] = _default_pen_down(arrays.get("pressure"), n)
    return build_signature(path, arrays, **_check_metadata(path, meta, found))


def write_json(sig: Signature, path: str | os.PathLike) -> None:
    """Write the JSON capture format, metadata included."""
    names = ["t", "x", "y", *sig.channels]
    cols = [getattr(sig, n).tolist() for n in names]
    down = sig.pen_down.tolist()
    points = [dict(zip(names, vals), pen_down=d) for *vals, d in zip(*cols, down)]
    doc: dict[str, Any] = {"writer": sig.writer, "label": sig.label, "session": sig.session, "points": points}
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------------- the format table


@dataclass(frozen=True)
class Format:
    """A file format: how to read it, how to write it, which suffixes it owns."""

    read: Callable[..., Signature]
    write: Callable[[Signature, str | os.PathLike], None]
    extensions: tuple[str, ...]


FORMATS: dict[str, Format] = {
    "svc2004": Format(read_svc2004, write_svc2004, (".txt",)),
    "csv": Format(read_csv, write_csv, (".csv",)),
    "tsv": Format(read_tsv, write_tsv, (".tsv",)),
    "json": Format(read_json, write_json, (".json",)),
}
EXTENSIONS: dict[str, str] = {ext: name for name, f in FORMATS.items() for ext in f.extensions}


def format_of(path: str | os.PathLike, fmt: str | None = None) -> str:
    """Name of the format of ``path``: ``fmt`` if given, else from its suffix."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise SignatureFormatError(path, f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        known = ", ".join(f"{e} ({n})" for e, n in EXTENSIONS.items())
        raise SignatureFormatError(path, f"unknown format: suffix {suffix or '(none)'!r}; known: {known}")
    return EXTENSIONS[suffix]


def read_signature(path: str | os.PathLike, fmt: str | None = None, **options: Any) -> Signature:
    """Read one pen-recording file, choosing the reader by ``fmt`` or the file suffix.

    ``options`` are passed to the reader: metadata ``writer``, ``label``,
    ``session``, and ``sample_rate_hz`` for CSV/TSV/JSON files without ``t``.
    """
    name = format_of(path, fmt)
    if name == "svc2004":
        options.pop("sample_rate_hz", None)
    return FORMATS[name].read(path, **options)


def write_signature(sig: Signature, path: str | os.PathLike, fmt: str | None = None) -> None:
    """Write ``sig`` to ``path`` atomically in ``fmt`` (default: from the suffix)."""
    FORMATS[format_of(path, fmt)].write(sig, path)
