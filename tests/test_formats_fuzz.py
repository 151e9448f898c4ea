"""Property-based: random and mutated files thrown at every reader; only SignatureFormatError escapes."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdnn_siamese.formats import FORMATS, SignatureFormatError, read_signature, write_signature
from tdnn_siamese.signature import Signature

from .conftest import make_signature

SUFFIX = {"svc2004": ".txt", "csv": ".csv", "tsv": ".tsv", "json": ".json"}
NASTY = ["nan", "NaN", "inf", "-inf", "1e309", "-1e400", "", " ", "0x1f", "１２", "1_0", "\x00", ",", "\t", "\n", "\r", "{", "}",
         "[", "]", '"', "null", "true", "-0", "1e15", "9" * 400, "\ufeff", "é", "\\", "1,2,3,4,5,6,7", "0 0 0 0"]
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # examples: see conftest profiles


def _valid_text(fmt: str, tmp_path) -> str:
    path = tmp_path / f"valid{SUFFIX[fmt]}"
    write_signature(make_signature(n=20, writer="w", label="genuine"), path)
    return path.read_text()


def _check(path) -> None:
    try:
        sig = read_signature(path)
    except SignatureFormatError as e:
        assert str(path) in str(e) and e.reason
        return
    assert isinstance(sig, Signature) and len(sig) >= 10  # accepted input is a valid signature


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(data=st.binary(max_size=600))
def test_random_bytes(tmp_path, fmt, data):
    p = tmp_path / f"random{SUFFIX[fmt]}"
    p.write_bytes(data)
    _check(p)


mutation = st.tuples(
    st.sampled_from(["delete", "insert", "replace_token", "dup_line", "drop_line", "truncate"]),
    st.floats(0, 1),
    st.floats(0, 1),
    st.one_of(st.sampled_from(NASTY), st.text(max_size=8)),
)


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_valid_files(tmp_path, fmt, mutations):
    text = _valid_text(fmt, tmp_path)
    for kind, a, b, token in mutations:
        i = int(a * len(text))
        if kind == "delete":
            text = text[:i] + text[i + int(b * 20) :]
        elif kind == "insert":
            text = text[:i] + token + text[i:]
        elif kind == "replace_token":
            j = i + 1 + int(b * 6)
            text = text[:i] + token + text[j:]
        else:
            lines = text.split("\n")
            k = int(a * (len(lines) - 1))
            if kind == "dup_line":
                lines.insert(k, lines[k])
            elif kind == "drop_line":
                del lines[k]
            else:
                lines = lines[: k + 1]
            text = "\n".join(lines)
    p = tmp_path / f"mutated{SUFFIX[fmt]}"
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    _check(p)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(["t", "x", "y", "pressure", "pen_down", "azimuth", "z"]), kids, max_size=5),
    max_leaves=20,
)


@SETTINGS
@given(points=st.lists(json_values, min_size=0, max_size=14), meta=st.dictionaries(st.sampled_from(["writer", "label", "session"]), json_values))
def test_structured_json(tmp_path, points, meta):
    p = tmp_path / "structured.json"
    p.write_text(json.dumps({"points": points, **meta}))
    _check(p)


@SETTINGS
@given(rows=st.lists(st.lists(st.one_of(st.integers(-10**6, 10**18), st.floats(), st.sampled_from(NASTY)), min_size=3, max_size=8), min_size=0, max_size=14),
       header=st.lists(st.sampled_from(["t", "x", "y", "pen_down", "pressure", "azimuth", "altitude", "T", "X", "Y", "q"]), min_size=1, max_size=8))
def test_structured_csv(tmp_path, rows, header):
    p = tmp_path / "structured.csv"
    p.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    _check(p)
