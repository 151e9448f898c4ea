"""scripts/strategy_choice.py: how a rule for choosing the scoring strategy does on validation writers it did not see."""

import json
import math

import pytest

from tdnn_siamese import datasets
from tdnn_siamese.cli import main
from tdnn_siamese.model import load_checkpoint
from tdnn_siamese.train import RunConfig, prepare, validate

from .conftest import SAMPLE, SMALL_TRAIN, load_script


def test_the_script_scores_every_strategy_as_validation_does_and_rules_on_held_out_halves(tmp_path, capsys):
    """A fold laid out as an experiment's: each strategy's full-validation EER is training's own validation EER of
    that strategy; every split of the 6 writers into 3 + 3 is used; a rule with one strategy is that strategy's
    held-out figure whatever the chosen-on half says, so `all` is no better than the best single strategy and no
    worse than the worst; JSON written."""
    table = datasets.load(SAMPLE)
    fold = tmp_path / "exp" / "fold1"
    datasets.write_manifest(table.to_dict("records"), fold / "train" / "manifest.csv")
    half = ["--set", "train.val_fraction=0.5", "--set", "train.val_k=3", "--set", "train.val_draws=3"]
    assert main(["train", "--data", str(fold / "train"), "--out", str(fold / "run"), "--epochs", "1", *SMALL_TRAIN, *half]) == 0
    capsys.readouterr()
    out = tmp_path / "choice.json"
    assert load_script("strategy_choice").main([str(tmp_path / "exp"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fold1/run" in printed and "mean over 1 models, held out: all" in printed
    doc = json.loads(out.read_text())
    f = doc["models"][str(fold / "run")]
    assert f["validation_writers"] == 6 and f["splits"] == math.comb(6, 3)
    cfg = RunConfig.from_dict(json.loads((fold / "run" / "config.json").read_text()))
    ck = load_checkpoint(fold / "run" / "model.pt")
    prep = prepare(fold / "train", cfg)
    assert f["strategy"] == ck.scoring and set(f["full"]) == {"mean", "nearest", "wnorm", "mean_offset", "nearest_offset"}
    for s, v in f["full"].items():
        own = validate(ck.encoder, prep, RunConfig(cfg.features, cfg.model, cfg.train.replace(val_strategies=(s,))))
        assert v == pytest.approx(own.eer_skilled)
    held = f["held_out"]
    singles = [held[f"only_{s}"] for s in f["full"]]
    assert min(singles) <= held["all"] <= max(singles) and all(0 <= v <= 1 for v in held.values())
    assert min(held["only_mean_offset"], held["only_nearest_offset"]) <= held["offsets"] <= max(held["only_mean_offset"], held["only_nearest_offset"])
    assert doc["mean_held_out"] == pytest.approx(held)


def test_the_script_reports_bad_input_without_a_traceback(tmp_path, capsys):
    mod = load_script("strategy_choice")
    assert mod.main([str(tmp_path)]) == 2
    assert "no foldN/run folder" in capsys.readouterr().err
    (tmp_path / "fold1" / "run").mkdir(parents=True)
    assert mod.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err
