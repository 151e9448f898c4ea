import filecmp

import numpy as np
import pandas as pd
import pytest

from tdnn_siamese import datasets, synth
from tdnn_siamese.features import FeatureConfig, extract

from .conftest import SAMPLE



def test_synth_output_loads_back(tmp_path):
    manifest = synth.synthesize(tmp_path, n_writers=3, n_genuine=5, n_skilled=2, seed=1)
    table = datasets.load(tmp_path)
    assert manifest == tmp_path / "manifest.csv"
    assert len(table) == 21 and table.writer.nunique() == 3
    assert table.label.value_counts().to_dict() == {"genuine": 15, "skilled": 6}
    gen = table[table.label == "genuine"]
    assert gen.groupby("writer")["session"].apply(list).tolist() == [[1, 1, 1, 2, 2]] * 3
    sigs = datasets.load_signatures(table)
    assert all(s.channels == ("pressure", "azimuth", "altitude") for s in sigs)
    assert all(np.isfinite(extract(s, FeatureConfig(feature_set="extended"))).all() for s in sigs)


def test_same_seed_same_files_and_writers_are_stable(tmp_path):
    synth.synthesize(tmp_path / "a", 2, 3, 1, seed=7)
    synth.synthesize(tmp_path / "b", 3, 3, 1, seed=7)  # one more writer
    synth.synthesize(tmp_path / "c", 2, 3, 1, seed=8)
    for rel in pd.read_csv(tmp_path / "a" / "manifest.csv")["path"]:
        assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False)
        assert not filecmp.cmp(tmp_path / "a" / rel, tmp_path / "c" / rel, shallow=False)


def _shape_distance(a, b):
    return float(np.abs(a[:, 1:3] - b[:, 1:3]).mean())  # normalised x, y after resampling


def test_forgeries_imitate_the_shape_but_not_the_timing():
    """Per writer: genuines are closest to each other, skilled forgeries next, other writers furthest;
    forgeries are slower. Holds for every one of 12 writers; on average forgeries take about 1.3 times as
    long as genuines, as SVC2004's skilled forgeries do (median 2.76 s against 2.08 s)."""
    writers = [synth.generate(w, 6, 4, seed=11) for w in range(1, 13)]
    feats = [[extract(s) for s in sigs] for sigs in writers]
    ratios = []
    for wi, (sigs, fs) in enumerate(zip(writers, feats)):
        g, k, other = fs[:6], fs[6:], feats[(wi + 1) % len(feats)][:6]
        gg = np.mean([_shape_distance(a, b) for i, a in enumerate(g) for b in g[i + 1 :]])
        gk = np.mean([_shape_distance(a, b) for a in g for b in k])
        gr = np.mean([_shape_distance(a, b) for a in g for b in other])
        assert gg < gk < gr
        ratios.append(np.mean([s.duration_ms for s in sigs[6:]]) / np.mean([s.duration_ms for s in sigs[:6]]))
    assert min(ratios) > 1.05 and 1.2 < np.mean(ratios) < 1.5


def test_bundled_sample_is_what_the_documented_command_makes(tmp_path):
    """data/sample was made by `tdnn-siamese synth --out data/sample --writers 12 --genuine 10 --skilled 6 --seed 2026`."""
    synth.synthesize(tmp_path, 12, 10, 6, seed=2026)
    ours, bundled = datasets.load(tmp_path), datasets.load(SAMPLE)
    assert ours.drop(columns="path").equals(bundled.drop(columns="path"))
    for a, b in zip(datasets.load_signatures(ours.iloc[::17]), datasets.load_signatures(bundled.iloc[::17])):
        np.testing.assert_allclose(a.x, b.x, atol=1.0)  # rounding may differ by one unit across platforms
        np.testing.assert_allclose(a.t, b.t, atol=1.0)


def test_bad_counts():
    with pytest.raises(ValueError):
        synth.synthesize("unused", 0, 5, 5, seed=0)


def test_realism_script_measures_known_signatures(tmp_path, capsys):
    """scripts/synth_realism.py: the measures of a hand-made signature, and a table for the synthetic corpus alone
    when the real one is missing (a note says so)."""
    from tdnn_siamese.signature import Signature

    from .conftest import load_script

    mod = load_script("synth_realism")
    t = np.arange(0, 1010, 10.0)  # 1 s at 100 Hz
    x = np.linspace(0, 300, len(t))  # a straight stroke to the right, 300 units in 1 s, then back up-down once
    y = np.where(t < 500, t / 5.0, (1000 - t) / 5.0)  # 2 units per step up, then down
    down = np.ones(len(t), bool)
    down[50] = False  # two pen-down components
    dur, comps, med, p90, ink, strokes, aspect = mod.measures(Signature(t=t, x=x, y=y, pen_down=down))
    assert dur == 1.0 and comps == 2 and strokes == 1
    assert med == pytest.approx(np.hypot(3, 2) / 0.01 / np.hypot(300, 98)) and p90 == pytest.approx(med)  # constant speed
    assert aspect == pytest.approx(300 / 98, rel=0.01)
    assert ink == pytest.approx(np.hypot(3, 2) * 98 / np.hypot(300, 98), rel=1e-9)  # 98 steps with both ends down
    out = tmp_path / "r.csv"
    assert mod.main(["--data", str(tmp_path / "none"), "--writers", "3", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "not found" in captured.err and "synthetic: forgery/genuine" in captured.out
    table = pd.read_csv(out)
    assert set(table["corpus"]) == {"synthetic"} and set(table["label"]) == {"genuine", "skilled"}
    assert (table["duration_s p10"] <= table["duration_s p90"]).all()
