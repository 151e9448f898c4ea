"""scripts/train_fold.py: one fold's model trained on its own, as experiment trains it, and read back by experiment --resume."""

import pandas as pd
import pytest
import torch

from tdnn_siamese import datasets
from tdnn_siamese.cli import main
from tdnn_siamese.model import load_checkpoint

from .conftest import SAMPLE, SMALL_TRAIN, load_script


@pytest.mark.slow
def test_a_fold_trained_alone_is_the_experiments_fold_and_experiment_resume_keeps_it(tmp_path, capsys):
    mod = load_script("train_fold")
    out = tmp_path / "x"
    assert mod.main(["--data", str(SAMPLE), "--out", str(out), "--fold", "2", "--folds", "2", "--set", "train.epochs=1", *SMALL_TRAIN]) == 0
    line = capsys.readouterr().out
    assert line.startswith("fold 2: kept epoch 1 of 1: validation EER skilled ") and str(out / "fold2" / "run" / "model.pt") in line
    _, test_w = list(datasets.writer_folds(datasets.writers(datasets.load(SAMPLE)), 2, 0))[1]
    prov = load_checkpoint(out / "fold2" / "run" / "model.pt").provenance
    assert not set(test_w) & (set(prov["train_writers"]) | set(prov["val_writers"]))  # the fold's test writers stay out
    manifest = (out / "fold2" / "train" / "manifest.csv").read_text()
    model = (out / "fold2" / "run" / "model.pt").read_bytes()
    assert not (out / "fold1").exists()
    # experiment --resume with the same settings trains fold 1 only and scores both; fold 2 is read back untouched
    assert main(["experiment", "--method", "tdnn", "--data", str(SAMPLE), "--folds", "2", "--out", str(out), "--resume",
                 "--epochs", "1", *SMALL_TRAIN]) == 0
    assert (out / "fold2" / "run" / "model.pt").read_bytes() == model
    assert (out / "fold2" / "train" / "manifest.csv").read_text() == manifest  # the split experiment makes
    assert set(pd.read_csv(out / "scores.csv").fold) == {1, 2} and (out / "fold1" / "run" / "model.pt").is_file()
    # other settings than the fold was trained with: refused by experiment, nothing retrained
    (out / "report.json").unlink()
    capsys.readouterr()
    assert main(["experiment", "--method", "tdnn", "--data", str(SAMPLE), "--folds", "2", "--out", str(out), "--resume",
                 "--epochs", "2", *SMALL_TRAIN]) == 2
    assert "train.epochs = 1 there, 2 now" in capsys.readouterr().err
    assert (out / "fold2" / "run" / "model.pt").read_bytes() == model
    # an ensemble (the default's two members) trains too, and its summary names the members
    assert mod.main(["--data", str(SAMPLE), "--out", str(tmp_path / "ens"), "--fold", "1", "--folds", "2", "--set", "train.epochs=1",
                     *SMALL_TRAIN, "--set", "model.members=2"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("fold 1: an ensemble of 2, members' kept epochs 1, 1: validation EER skilled ") and "; members " in line
    assert load_checkpoint(tmp_path / "ens" / "fold1" / "run" / "model.pt").encoder.cfg.members == 2


def test_the_script_reports_bad_input_without_a_traceback(tmp_path, capsys, sample_model):
    mod = load_script("train_fold")
    threads = torch.get_num_threads()
    try:
        for args, message in [(["--fold", "3", "--folds", "2"], "--fold must be between 1 and --folds (2), got 3"),
                              (["--fold", "1", "--folds", "13"], "--folds must be between 2 and the number of writers (12), got 13"),
                              (["--fold", "1", "--set", "train.nonsense=1"], "unknown TrainConfig key(s): nonsense"),
                              (["--fold", "1", "--threads", "0"], "--threads must be at least 1"),
                              (["--fold", "1", "--set", f"train.init={sample_model}"], "was trained on this corpus, so every fold's test writers")]:
            assert mod.main(["--data", str(SAMPLE), "--out", str(tmp_path / "x"), *args]) == 2
            err = capsys.readouterr().err
            assert message in err and "Traceback" not in err
        assert mod.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "y"), "--fold", "1"]) == 2
        assert "missing" in capsys.readouterr().err
        assert not (tmp_path / "x" / "fold3").exists() and not (tmp_path / "y").exists()
    finally:
        torch.set_num_threads(threads)
