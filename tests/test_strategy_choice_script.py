"""scripts/strategy_choice.py: how a rule for choosing the scoring strategy does on validation writers it did not see."""

import dataclasses
import json
import math

import numpy as np
import pytest

from tdnn_siamese import datasets
from tdnn_siamese.cli import main
from tdnn_siamese.model import load_checkpoint
from tdnn_siamese.train import RunConfig, prepare, validate

from .conftest import SAMPLE, SMALL_TRAIN, load_script


def test_the_script_scores_every_strategy_as_validation_does_and_rules_on_held_out_halves(tmp_path, capsys):
    """A fold laid out as an experiment's: each strategy's full-validation EER is training's own validation EER of
    that strategy; every split of the 6 writers into 3 + 3 is used; in a split, a rule's choice has the lowest
    skilled EER of its candidates on the half it chose on, and its held-out figure is that strategy's EER as
    training's validation measures it on the other half alone; JSON written."""
    table = datasets.load(SAMPLE)
    fold = tmp_path / "exp" / "fold1"
    datasets.write_manifest(table.to_dict("records"), fold / "train" / "manifest.csv")
    half = ["--set", "train.val_fraction=0.5", "--set", "train.val_k=3", "--set", "train.val_draws=1"]  # first 3 references:
    #   the protocol of a half alone is the same as within all 6 writers, so validation on a half can check the script
    assert main(["train", "--data", str(fold / "train"), "--out", str(fold / "run"), "--epochs", "1", *SMALL_TRAIN, *half]) == 0
    capsys.readouterr()
    out = tmp_path / "choice.json"
    assert load_script("strategy_choice").main([str(tmp_path / "exp"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fold1/run" in printed and "mean over 1 models, held out: all" in printed
    doc = json.loads(out.read_text())
    f = doc["models"][str(fold / "run")]
    assert f["validation_writers"] == 6 and len(f["splits"]) == math.comb(6, 3)
    cfg = RunConfig.read(fold / "run" / "config.json")
    ck = load_checkpoint(fold / "run" / "model.pt")
    prep = prepare(fold / "train", cfg)
    strategies = ["mean", "nearest", "wnorm", "mean_offset", "nearest_offset"]
    assert f["strategy"] == ck.scoring and list(f["full"]) == strategies

    def own(writers, strategy):  # training's validation on these writers alone, this strategy only
        rows = [i for i in prep.val_rows if prep.table.writer[i] in set(writers)]
        sub = dataclasses.replace(prep, val_rows=np.asarray(rows))
        return validate(ck.encoder, sub, RunConfig(cfg.features, cfg.model, cfg.train.replace(val_strategies=(strategy,)))).eer_skilled

    val_writers = sorted(prep.table.writer[prep.val_rows].unique())
    for s in strategies:
        assert f["full"][s] == pytest.approx(own(val_writers, s))
    for split in f["splits"][:3]:
        on = {s: own(split["chose_on"], s) for s in strategies}
        assert sorted(split["chose_on"] + split["judged_on"]) == val_writers
        assert on[split["choices"]["all"]] == pytest.approx(min(on.values()))
        assert on[split["choices"]["offsets"]] == pytest.approx(min(on["mean_offset"], on["nearest_offset"]))
        assert all(split["choices"][f"only_{s}"] == s for s in strategies)
        for rule in ("all", "offsets", "only_wnorm"):
            assert split["held_out"][rule] == pytest.approx(own(split["judged_on"], split["choices"][rule]))
    assert f["held_out"]["all"] == pytest.approx(np.mean([x["held_out"]["all"] for x in f["splits"]]))
    assert doc["mean_held_out"] == pytest.approx(f["held_out"])


def test_the_script_reports_bad_input_without_a_traceback(tmp_path, capsys):
    mod = load_script("strategy_choice")
    assert mod.main([str(tmp_path)]) == 2
    assert "no foldN/run folder" in capsys.readouterr().err
    (tmp_path / "fold1" / "run").mkdir(parents=True)
    assert mod.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err
