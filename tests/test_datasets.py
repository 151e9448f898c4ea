import numpy as np
import pandas as pd
import pytest

from tdnn_siamese import datasets
from tdnn_siamese.datasets import DatasetError
from tdnn_siamese.features import FeatureConfig, extract
from tdnn_siamese.formats import write_signature

from .conftest import make_signature


def test_public_svc2004_folder(svc_root):
    table = datasets.load(svc_root)
    assert len(table) == 1600
    assert table["writer"].nunique() == 40
    assert table["label"].value_counts().to_dict() == {"genuine": 800, "skilled": 800}
    gen = table[table.label == "genuine"]
    assert gen["session"].value_counts().to_dict() == {1: 400, 2: 400}
    assert table[table.label == "skilled"]["session"].isna().all()
    u1 = table[(table.writer == "U1") & (table.label == "genuine")]
    assert u1["path"].str.endswith(tuple(f"U1S{s}.TXT" for s in range(1, 21))).all()
    assert u1["number"].tolist() == list(range(1, 21))  # natural order, S2 before S10


@pytest.mark.slow
def test_every_public_file_gives_finite_bromley_features(svc_root):
    table = datasets.load(svc_root)
    feats = [extract(s) for s in datasets.load_signatures(table)]
    assert len(feats) == 1600
    stacked = np.stack(feats)
    assert stacked.shape == (1600, 200, 8)
    assert np.isfinite(stacked).all()
    var = [extract(s, FeatureConfig(feature_set="extended", n_steps=None)) for s in datasets.load_signatures(table.iloc[::37])]
    assert all(np.isfinite(v).all() and v.shape[1] == 13 for v in var)


def _svc_like(tmp_path, writers=(1, 2, 10), samples=range(1, 41)):
    for u in writers:
        for s in samples:
            write_signature(make_signature(seed=u * 100 + s), tmp_path / f"U{u}S{s}.TXT", fmt="svc2004")
    return tmp_path


def test_svc_layout_labels_and_sessions(tmp_path):
    table = datasets.load(_svc_like(tmp_path))
    assert table["writer"].unique().tolist() == ["U1", "U2", "U10"]
    row = table[(table.writer == "U2") & (table.path.str.endswith("U2S11.TXT"))].iloc[0]
    assert (row.label, row.session, row.number) == ("genuine", 2, 11)
    row = table[table.path.str.endswith("U10S25.TXT")].iloc[0]
    assert (row.label, pd.isna(row.session), row.number) == ("skilled", True, 5)


def test_svc_sample_number_out_of_range(tmp_path):
    _svc_like(tmp_path, writers=(1,), samples=(1, 41))
    with pytest.raises(DatasetError, match="S41"):
        datasets.load(tmp_path)


def _manifest(tmp_path, text):
    for name in ("a.csv", "b.csv", "c.json"):
        write_signature(make_signature(seed=len(name)), tmp_path / name)
    (tmp_path / "manifest.csv").write_text(text)
    return tmp_path


def test_manifest_layout(tmp_path):
    root = _manifest(tmp_path, "path,writer,label,session\nb.csv,w1,genuine,1\na.csv,w1,genuine,\nc.json,w2,skilled,\n")
    table = datasets.load(root)
    assert table.columns.tolist() == ["writer", "label", "session", "number", "path"]
    w1 = table[table.writer == "w1"]
    assert w1["path"].str.endswith("b.csv").tolist() == [True, False]  # manifest order kept
    assert w1["number"].tolist() == [1, 2]
    assert datasets.load(root / "manifest.csv").equals(table)  # the manifest itself works too
    sigs = datasets.load_signatures(table)
    assert [s.writer for s in sigs] == ["w1", "w1", "w2"] and sigs[0].session == 1 and sigs[1].session is None


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("path,label\na.csv,genuine\n", 1, "lacks column(s) writer"),
        ("path,writer,label\na.csv,w1,forged\n", 2, "label 'forged'"),
        ("path,writer,label\nmissing.csv,w1,genuine\n", 2, "file not found"),
        ("path,writer,label\na.csv,w1,genuine\na.csv,w1,genuine\n", 3, "listed twice"),
        ("path,writer,label,session\na.csv,w1,genuine,first\n", 2, "not an integer"),
        ("path,writer,label\na.csv,,genuine\n", 2, "empty writer"),
        ("path,writer,label\na.csv,w1\n", 2, "2 fields"),
        ("path,writer,label\n", None, "lists no files"),
    ],
)
def test_manifest_errors(tmp_path, text, line, message):
    root = _manifest(tmp_path, text)
    with pytest.raises(DatasetError) as exc:
        datasets.load(root)
    assert message in str(exc.value) and "manifest.csv" in str(exc.value)
    assert exc.value.line == line


def test_not_a_corpus(tmp_path):
    with pytest.raises(DatasetError, match="not a corpus"):
        datasets.load(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        datasets.load(tmp_path / "nope")


def test_fingerprint_depends_on_content_not_location(tmp_path):
    roots = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        roots.append(_manifest(tmp_path / name, "path,writer,label\na.csv,w1,genuine\n"))
    fa, fb = (datasets.fingerprint(datasets.load(r)) for r in roots)
    assert fa == fb and len(fa) == 64
    write_signature(make_signature(seed=99), roots[1] / "a.csv")
    assert datasets.fingerprint(datasets.load(roots[1])) != fa


@pytest.mark.parametrize("n,k", [(40, 4), (10, 3), (5, 5)])
def test_writer_folds_are_disjoint_complete_balanced_and_seeded(n, k):
    names = [f"w{i}" for i in range(n)]
    folds = datasets.writer_folds(names, k, seed=3)
    assert len(folds) == k
    tests = [set(test) for _, test in folds]
    assert set().union(*tests) == set(names)
    assert sum(len(t) for t in tests) == n  # each writer tested once
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    for train, test in folds:
        assert not set(train) & set(test) and set(train) | set(test) == set(names)
    assert folds == datasets.writer_folds(reversed(names), k, seed=3)  # input order does not matter
    assert folds != datasets.writer_folds(names, k, seed=4)


def test_writer_folds_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        datasets.writer_folds(["a", "b"], 3, seed=0)


def test_split_writers():
    rest, hold = datasets.split_writers([f"w{i}" for i in range(30)], 6, seed=1)
    assert len(hold) == 6 and len(rest) == 24 and not set(rest) & set(hold)
    assert (rest, hold) == datasets.split_writers([f"w{i}" for i in range(30)], 6, seed=1)
