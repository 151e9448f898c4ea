import json
import logging

import numpy as np
import pytest

from tdnn_siamese import formats
from tdnn_siamese.formats import FORMATS, SignatureFormatError, read_signature, write_signature

from .conftest import make_signature

SUFFIX = {"svc2004": ".txt", "csv": ".csv", "tsv": ".tsv", "json": ".json"}


def svc_text(rows, count=None):
    return f"{len(rows) if count is None else count}\n" + "".join(" ".join(map(str, r)) + "\n" for r in rows)


def svc_rows(n=12):
    return [[100 + 7 * i, 200 + 3 * (i % 4), 1000 + 10 * i, 1, 1200, 600, 300 + i] for i in range(n)]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("channels", [True, False])
def test_round_trip(tmp_path, fmt, channels):
    sig = make_signature(channels=channels, writer="w1", label="genuine", session=1)
    path = tmp_path / f"sig{SUFFIX[fmt]}"
    write_signature(sig, path)
    back = read_signature(path, writer="w1", label="genuine", session=1)
    for name in ("t", "x", "y", "pen_down"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sig, name))
    assert back.channels == sig.channels
    for c in sig.channels:
        np.testing.assert_array_equal(getattr(back, c), getattr(sig, c))
    assert (back.writer, back.label, back.session, back.source) == ("w1", "genuine", 1, str(path))


def test_json_carries_its_own_metadata(tmp_path):
    path = tmp_path / "s.json"
    write_signature(make_signature(writer="alice", label="skilled", session=2), path)
    sig = read_signature(path)
    assert (sig.writer, sig.label, sig.session) == ("alice", "skilled", 2)


def test_json_metadata_conflicting_with_manifest_is_an_error(tmp_path):
    path = tmp_path / "s.json"
    write_signature(make_signature(writer="alice", label="genuine"), path)
    with pytest.raises(SignatureFormatError, match="writer 'alice'"):
        read_signature(path, writer="bob")


# --------------------------------------------------------------------------- reader semantics


def test_svc_task1_and_task2(tmp_path):
    p2 = tmp_path / "t2.txt"
    p2.write_text(svc_text(svc_rows()))
    s2 = read_signature(p2)
    assert s2.channels == ("pressure", "azimuth", "altitude")
    assert s2.pressure[0] == 300 and s2.azimuth[0] == 1200 and s2.altitude[0] == 600
    p1 = tmp_path / "t1.txt"
    p1.write_text(svc_text([r[:4] for r in svc_rows()]))
    s1 = read_signature(p1)
    assert s1.channels == ()
    np.testing.assert_array_equal(s1.x, s2.x)


def test_svc_button_values_above_one_mean_pen_down(tmp_path):
    rows = svc_rows()
    for i, b in enumerate([0, 1, 2, 3, 4, 5, 0, 1, 1, 1, 1, 1]):
        rows[i][3] = b
    p = tmp_path / "b.txt"
    p.write_text(svc_text(rows).replace("\n", "\r\n"))  # CRLF as in the public files
    sig = read_signature(p)
    assert sig.pen_down.tolist() == [False, True, True, True, True, True, False] + [True] * 5


def test_csv_case_insensitive_header_and_defaults(tmp_path):
    n = 12
    p = tmp_path / "a.csv"
    p.write_text("X,Y,Pressure\n" + "".join(f"{i},{i % 3},{0 if i < 2 else 50}\n" for i in range(n)))
    sig = read_signature(p, sample_rate_hz=200)
    np.testing.assert_allclose(sig.t, np.arange(n) * 5.0)  # uniform at 200 Hz
    assert sig.pen_down.tolist() == [False, False] + [True] * (n - 2)  # pressure > 0
    q = tmp_path / "b.tsv"
    q.write_text("t\tx\ty\n" + "".join(f"{10 * i}\t{i}\t{i % 3}\n" for i in range(n)))
    assert read_signature(q).pen_down.all()  # no pen_down, no pressure: always down


def test_csv_pen_down_words(tmp_path):
    p = tmp_path / "a.csv"
    vals = ["true", "false", "1", "0", "yes", "no"] + ["1"] * 6
    p.write_text("t,x,y,pen_down\n" + "".join(f"{10 * i},{i},{i % 3},{v}\n" for i, v in enumerate(vals)))
    assert read_signature(p).pen_down.tolist()[:6] == [True, False, True, False, True, False]


def test_json_pointer_events_shape(tmp_path):
    pts = [{"t": 16.7 * i, "x": 10.0 * i, "y": (i % 4) * 3.0, "pressure": 0.5} for i in range(15)]
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"points": pts, "writer": 7, "label": "genuine"}))
    sig = read_signature(p)
    assert sig.writer == "7" and sig.pen_down.all() and sig.channels == ("pressure",)
    q = tmp_path / "b.json"
    q.write_text(json.dumps(pts))  # a bare list of points
    assert len(read_signature(q)) == 15


def test_timestamps_going_backwards_and_repeating_are_repaired(tmp_path, caplog):
    rows = svc_rows(14)
    rows[5][2], rows[6][2] = rows[6][2], rows[5][2]  # backwards step
    rows[9][2] = rows[8][2]  # repeated
    p = tmp_path / "r.txt"
    p.write_text(svc_text(rows))
    with caplog.at_level(logging.DEBUG, logger="tdnn_siamese.formats"):
        sig = read_signature(p)
    assert np.all(np.diff(sig.t) > 0)
    assert len(sig) == 13  # one duplicate dropped
    assert sig.x[5] == rows[6][0]  # stable sort moved the earlier timestamp first
    assert sig.x[8] == rows[8][0]  # the first of the duplicates is kept
    assert "backwards" in caplog.text and "repeated" in caplog.text


# --------------------------------------------------------------------------- errors


def _bad_svc(tmp_path, text, name="bad.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


ROWS = svc_rows()
BAD_SVC = [
    ("", None, "empty file"),
    ("   \n\n", None, "empty file"),
    (svc_text(ROWS, count=13), None, "declares 13 points but the file has 12"),
    ("twelve\n" + svc_text(ROWS)[3:], 1, "point count"),
    (svc_text(ROWS[:4] + [[1, 2, "abc", 1, 0, 0, 0]] + ROWS[5:]), 6, "column 't' is not a number: 'abc'"),
    (svc_text(ROWS[:3] + [[1, 2, 1030, 1, 0, 0]] + ROWS[4:]), 5, "6 columns where the first point row has 7"),
    (svc_text([r[:5] for r in ROWS]), 2, "5 columns"),
    (svc_text(ROWS[:7] + [[1, "nan", 1070, 1, 0, 0, 0]] + ROWS[8:]), 9, "column 'y' is nan"),
    (svc_text(ROWS[:2] + [["inf", 2, 1020, 1, 0, 0, 0]] + ROWS[3:]), 4, "column 'x' is inf"),
    (svc_text(ROWS[:9]), None, "only 9 points"),
    (svc_text([r[:3] + [0] + r[4:] for r in ROWS]), None, "no pen-down point"),
    (svc_text([[5, 5] + r[2:] for r in ROWS]), None, "never moves"),
    (svc_text([r[:2] + [r[2] / 1000] + r[3:] for r in ROWS]), None, "milliseconds"),
    (svc_text([[1e20] + r[1:] for r in ROWS]), 2, "magnitude"),
    ("2000000\n1 2 3 1\n", 1, "at most 1000000"),
]


@pytest.mark.parametrize("text,line,message", BAD_SVC)
def test_svc_errors_name_file_line_and_reason(tmp_path, text, line, message):
    p = _bad_svc(tmp_path, text)
    with pytest.raises(SignatureFormatError) as exc:
        read_signature(p)
    err = exc.value
    assert err.path == str(p)
    assert err.line == line
    assert message in str(err)
    assert str(p) in str(err)


BAD_CSV = [
    ("1,2\n3,4\n", 1, "header lacks column(s) x, y"),
    (",\n,,\n", None, "empty file"),
    ("t,x,y\n" + "".join(f"{10 * i},{i},{i}\n" for i in range(12)) + "200,1\n", 14, "2 fields where the header has 3"),
    ("t,x,y\n" + "".join(f"{10 * i},{i},{i}\n" for i in range(5)) + "60,,7\n", 7, "column 'x' is not a number: ''"),
    ("t,x,x\n1,2,3\n", 1, "appears twice"),
    ("t,x,y\n", None, "header but no points"),
    ("t,x,y,pen_down\n" + "".join(f"{10 * i},{i},{i},maybe\n" for i in range(12)), 2, "pen_down"),
    ('t,x,y\n1,"2\n', None, "malformed CSV"),
]


@pytest.mark.parametrize("text,line,message", BAD_CSV)
def test_csv_errors(tmp_path, text, line, message):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(SignatureFormatError) as exc:
        read_signature(p)
    assert message in str(exc.value) and str(p) in str(exc.value)
    if line is not None:
        assert exc.value.line == line


BAD_JSON = [
    ('{"points": [', 1, "invalid JSON"),
    ('{"pts": []}', None, "no 'points'"),
    ('{"points": []}', None, "no points"),
    ('{"points": [1, 2]}', None, "points[0] is not an object"),
    ('{"points": [{"x": 1}]}', None, "has no 'y'"),
    ('{"points": [{"x": 1, "y": 2, "t": 0}, {"x": 1, "y": 2}]}', None, "points[1] lacks 't'"),
    ('{"points": [{"x": 1, "y": 2}, {"x": "a", "y": 2}]}', None, "points[1].x must be a number"),
    ('{"points": [{"x": 1, "y": 2}, {"x": true, "y": 2}]}', None, "points[1].x must be a number"),
    ('{"points": [{"x": NaN, "y": 2}]}', None, "is nan"),
    ('{"points": [{"x": 1e999, "y": 2}]}', None, "is inf"),
    ('{"points": [{"x": 1, "y": 2}], "label": "forged"}', None, "label 'forged'"),
    ('{"points": [{"x": 1, "y": 2}], "session": "one"}', None, "'session' has an unexpected type"),
]


@pytest.mark.parametrize("text,line,message", BAD_JSON)
def test_json_errors(tmp_path, text, line, message):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(SignatureFormatError) as exc:
        read_signature(p)
    assert message in str(exc.value)
    assert exc.value.line == line


def test_unknown_format(tmp_path):
    p = tmp_path / "sig.xyz"
    p.write_text("1,2,3")
    with pytest.raises(SignatureFormatError, match="unknown format: suffix '.xyz'"):
        read_signature(p)
    with pytest.raises(SignatureFormatError, match="unknown format 'hdf5'"):
        read_signature(p, fmt="hdf5")


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(SignatureFormatError, match="cannot read file"):
        read_signature(tmp_path / "nope.csv")
    p = tmp_path / "latin.csv"
    p.write_bytes(b"t,x,y\n1,2,\xff\n")
    with pytest.raises(SignatureFormatError, match="not UTF-8") as exc:
        read_signature(p)
    assert exc.value.line == 2


def test_file_over_50_mb_is_refused_before_reading(tmp_path):
    p = tmp_path / "huge.csv"
    with open(p, "wb") as f:
        f.truncate(formats.MAX_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(SignatureFormatError, match="at most 50 MB"):
        read_signature(p)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_more_than_a_million_points_is_refused(tmp_path, suffix):
    n = formats.MAX_POINTS + 1
    p = tmp_path / f"many{suffix}"
    if suffix == ".csv":
        p.write_text("x,y\n" + "1,2\n" * n)
    else:
        p.write_text('{"points": [' + ",".join(['{"x":1,"y":2}'] * n) + "]}")
    with pytest.raises(SignatureFormatError, match="1000000"):
        read_signature(p)


@pytest.mark.parametrize("text", [
    svc_text(svc_rows(30)),
    svc_text([[r[0] + 0.25, r[1] - 1e-3] + r[2:] for r in svc_rows(30)]),  # decimals: the float conversion
    svc_text(svc_rows(30)).replace("\n", "\r\n"),  # CRLF line ends
    svc_text(svc_rows(30)).replace(" ", "\t  ") + "\n\n",  # tabs, runs of blanks, trailing blank lines
    "30\n\n" + svc_text(svc_rows(30)).split("\n", 1)[1],  # a blank line before the points: line numbers shift
    svc_text([r[:4] for r in svc_rows(30)]),  # Task 1: four columns
    svc_text([r[:2] + [r[2] - 40 * (i == 12)] + r[3:] for i, r in enumerate(svc_rows(30))]),  # time going backwards
])
def test_svc_whole_file_reader_equals_the_line_by_line_one(tmp_path, monkeypatch, text):
    """The one-pass reader of plain files gives exactly what the line-by-line reader gives, line numbers included."""
    p = _bad_svc(tmp_path, text, "ok.txt")
    head, _, body = text.partition("\n")
    fast_table = formats._fast_table(body, int(head))
    assert fast_table is not None  # these files take the fast path
    fast = read_signature(p)
    monkeypatch.setattr(formats, "_fast_table", lambda body, declared: None)
    slow = read_signature(p)
    for c in ("t", "x", "y", "pen_down", "pressure", "azimuth", "altitude"):
        a, b = getattr(fast, c), getattr(slow, c)
        assert (a is None and b is None) or np.array_equal(a, b), c
    lines = [i for i, ln in enumerate(text.splitlines(), start=1) if ln.split()][1:]
    np.testing.assert_array_equal(fast_table[1], lines)


def test_a_lone_carriage_return_is_a_line_break_for_both_readers(tmp_path):
    rows = svc_rows(30)
    text = "30\n" + "".join(" ".join(map(str, r[:4])) + "\r" + " ".join(map(str, r[4:])) + "\n" for r in rows)
    assert formats._fast_table(text.partition("\n")[2], 30) is None
    with pytest.raises(SignatureFormatError, match="declares 30 points but the file has 60"):
        read_signature(_bad_svc(tmp_path, text))
