"""scripts/validation_draws.py: how much a fold model's validation EER depends on the references drawn."""

import json

import pytest

from tdnn_siamese import datasets
from tdnn_siamese.cli import main
from tdnn_siamese.metrics import eer
from tdnn_siamese.model import load_checkpoint
from tdnn_siamese.train import RunConfig, prepare, validate

from .conftest import SAMPLE, SMALL_TRAIN, load_script


def test_the_script_reports_first_k_and_draw_figures_of_each_fold(tmp_path, capsys):
    """A fold laid out as an experiment's (foldN/train/manifest.csv, foldN/run): the first-k figure is what training's
    own validation scores with one draw for the model's strategy; the draws' figures are consistent; JSON written."""
    table = datasets.load(SAMPLE)
    fold = tmp_path / "exp" / "fold1"
    datasets.write_manifest(table.to_dict("records"), fold / "train" / "manifest.csv")
    half = ["--set", "train.val_fraction=0.5", "--set", "train.val_k=3"]  # 6 validation writers: an EER that is not 0
    #   and depends on the draw (of 3 among each writer's 5 genuine signatures of session 1)
    assert main(["train", "--data", str(fold / "train"), "--out", str(fold / "run"), "--epochs", "1", *SMALL_TRAIN, *half]) == 0
    capsys.readouterr()
    out = tmp_path / "draws.json"
    assert load_script("validation_draws").main([str(tmp_path / "exp"), "--draws", "6", "--group", "3", "--out", str(out)]) == 0
    assert "fold1 (" in capsys.readouterr().out
    f = json.loads(out.read_text())["fold1"]
    ck = load_checkpoint(fold / "run" / "model.pt")
    cfg = RunConfig.read(fold / "run" / "config.json")
    one = validate(ck.encoder, prepare(fold / "train", cfg), RunConfig(cfg.features, cfg.model, cfg.train.replace(val_draws=1)))
    sc = one.scores[ck.scoring]
    assert f["strategy"] == ck.scoring and f["first_k"] == pytest.approx(eer(sc["genuine"], sc["skilled"])[0])
    assert 0 <= f["draw_min"] <= f["draw_mean"] <= f["draw_max"] <= 1 and f["draw_min"] < f["draw_max"] and f["draw_sd"] > 0
    assert f["draws"] == 6 and f["groups"] == 2 and f["group_mean_sd"] >= 0 and f["validation_writers"] >= 2


def test_the_script_reports_bad_input_without_a_traceback(tmp_path, capsys):
    mod = load_script("validation_draws")
    assert mod.main([str(tmp_path)]) == 2
    assert "no foldN/run folder" in capsys.readouterr().err
    assert mod.main([str(tmp_path), "--draws", "1"]) == 2
    assert "--draws must be at least 2" in capsys.readouterr().err
    assert mod.main([str(tmp_path), "--draws", "4", "--group", "5"]) == 2
    assert "--group between 1 and --draws" in capsys.readouterr().err
    (tmp_path / "fold1" / "run").mkdir(parents=True)
    assert mod.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err
