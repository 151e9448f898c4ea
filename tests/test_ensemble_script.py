"""scripts/ensemble.py: an ensemble of fold models (train.member) judged on validation, then on the test writers."""

import json

import numpy as np
import pandas as pd
import pytest

from tdnn_siamese.cli import main
from tdnn_siamese.metrics import eer, per_writer_eer
from tdnn_siamese.model import load_checkpoint
from tdnn_siamese.train import RunConfig, prepare, validate

from .conftest import SAMPLE, SMALL_TRAIN, load_script

ONE_DRAW = ["--set", "train.val_draws=1", "--set", "train.val_fraction=0.5", "--set", "train.val_k=3"]


def _experiment(out, *extra):
    assert main(["experiment", "--method", "tdnn", "--data", str(SAMPLE), "--folds", "2", "--protocol", "S05,S10", "--out", str(out),
                 "--epochs", "1", *SMALL_TRAIN, *ONE_DRAW, *extra]) == 0


@pytest.mark.slow
def test_the_ensemble_is_the_mean_of_its_members_scores(tmp_path, capsys):
    """Validation: each member's figure is its kept one; the ensemble's EER is that of the members' mean scores, as
    training's own validation scores them. Test: writer-specific EERs of the mean raw score, global of the mean log-odds."""
    a, b = tmp_path / "m0", tmp_path / "m1"
    _experiment(a)
    _experiment(b, "--set", "train.member=1")
    capsys.readouterr()
    out = tmp_path / "ens.json"
    assert load_script("ensemble").main([str(a), str(b), "--out", str(out)]) == 0
    assert "ensemble" in capsys.readouterr().out
    res = json.loads(out.read_text())
    for fold in ("fold1", "fold2"):
        f = res["validation"][fold]
        runs = [a / fold / "run", b / fold / "run"]
        for run, figure in zip(runs, f["members"]):
            m = pd.read_csv(run / "metrics.csv")
            assert figure == pytest.approx(m.loc[m["best"], "val_eer_skilled"].iloc[-1], abs=1e-6)  # metrics.csv: 6 decimals
        scores = []
        for run in runs:  # one draw: training's validation scores, pooled over draws, are that draw's
            ck = load_checkpoint(run / "model.pt")
            cfg = RunConfig.read(run / "config.json")
            scores.append(validate(ck.encoder, prepare(run.parent / "train", cfg), cfg).scores[ck.scoring])
        g, s = (np.mean([x[kind] for x in scores], axis=0) for kind in ("genuine", "skilled"))
        assert f["ensemble"] == pytest.approx(eer(g, s)[0])
    frames = [pd.read_csv(e / "S05" / "scores.csv", dtype={"writer": str}) for e in (a, b)]
    t = frames[0][frames[0]["kind"] != "random"]
    raw = np.mean([f.loc[t.index, "raw_score"] for f in frames], axis=0)
    ws = per_writer_eer(t["writer"].to_numpy(), (t["kind"] == "genuine").to_numpy(), raw)
    assert res["test"]["S05"]["skilled"]["writer_specific"] == pytest.approx(np.mean(list(ws.values())))
    lo = np.mean([f.loc[t.index, "score"] for f in frames], axis=0)
    gen = (t["kind"] == "genuine").to_numpy()
    assert res["test"]["S05"]["skilled"]["global_pooled"] == pytest.approx(eer(lo[gen], lo[~gen])[0])
    # not members of one ensemble: the same member twice, or other settings
    assert load_script("ensemble").main([str(a), str(a)]) == 2
    assert "train.member repeats" in capsys.readouterr().err
    c = tmp_path / "other"
    _experiment(c, "--set", "train.member=2", "--set", "train.rank_scale=5")
    capsys.readouterr()
    assert load_script("ensemble").main([str(a), str(c)]) == 2
    err = capsys.readouterr().err
    assert "train.rank_scale" in err and "Traceback" not in err


def test_mean_scores_averages_trial_by_trial():
    mod = load_script("ensemble")
    a = [{"genuine": [1.0, 3.0], "skilled": [0.0], "random": []}, {"genuine": [2.0], "skilled": [5.0, 1.0], "random": [4.0]}]
    b = [{"genuine": [3.0, 1.0], "skilled": [2.0], "random": []}, {"genuine": [0.0], "skilled": [1.0, 1.0], "random": [0.0]}]
    assert mod.mean_scores([a, b]) == [{"genuine": [2.0, 2.0], "skilled": [1.0], "random": []},
                                       {"genuine": [1.0], "skilled": [3.0, 1.0], "random": [2.0]}]
    with pytest.raises(ValueError, match="different trials"):
        mod.mean_scores([a, b[:1]])


def test_the_script_reports_bad_input_without_a_traceback(tmp_path, capsys):
    mod = load_script("ensemble")
    assert mod.main([str(tmp_path)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert mod.main([str(tmp_path), str(tmp_path)]) == 2
    assert "no foldN/run folder" in capsys.readouterr().err
    (tmp_path / "fold1" / "run").mkdir(parents=True)
    assert mod.main([str(tmp_path), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err
