import dataclasses
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from tdnn_siamese import datasets
from tdnn_siamese.cli import main
from tdnn_siamese.config import ConfigError
from tdnn_siamese.model import load_checkpoint
from tdnn_siamese import train as train_module
from tdnn_siamese.train import PRETRAINED, SYNTHETIC_INIT, RunConfig, apply_sets, config_difference, resolve_init
from tdnn_siamese.verifier import STRATEGIES, usable_strategies

from .conftest import SAMPLE, SMALL_TRAIN

SMALL = SMALL_TRAIN


def weights(run):
    return load_checkpoint(run / "model.pt").encoder.state_dict()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.slow
def test_train_default_settings_on_the_sample(tmp_path, capsys):
    """The acceptance command: `tdnn-siamese train --data data/sample --out RUN --epochs 2`: by default an ensemble of
    two members, each with its training curve; the model holds both, validated together (the same seed giving the
    same weights is tested on one encoder: test_ensemble.py, and the SIGKILL/resume test)."""
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "a"), "--epochs", "2"]) == 0
    metrics = pd.read_csv(tmp_path / "a" / "members" / "m0" / "metrics.csv")
    assert metrics.columns.tolist() == ["epoch", "train_loss", "val_eer_skilled", "val_eer_random", "strategy", "seconds", "best"]
    assert metrics["epoch"].tolist() == [0, 1, 2]  # epoch 0 validates the initial weights
    summary = pd.read_csv(tmp_path / "a" / "metrics.csv")
    assert summary.columns.tolist() == ["member", "kept_epoch", "epochs_run", "val_eer_skilled", "strategy"]
    assert list(summary["member"].astype(str)) == ["0", "1", "ensemble"]
    ck = load_checkpoint(tmp_path / "a" / "model.pt")
    assert ck.encoder.cfg.members == 2 and ck.provenance["seed"] == 0 and len(ck.provenance["data_fingerprint"]) == 64
    assert ck.provenance["torch_version"] == torch.__version__ and ck.provenance["package_version"]
    assert not set(ck.provenance["train_writers"]) & set(ck.provenance["val_writers"])
    assert set(ck.calibration) == {"mean", "nearest", "wnorm", "mean_offset", "nearest_offset"} and ck.scoring in ck.calibration  # the strategies DTW can score
    assert all(c["genuine"] and c["skilled"] and c["random"] for c in ck.calibration.values())
    assert "validation EER" in capsys.readouterr().out


def test_the_summary_reads_the_kept_epoch_and_the_ensembles_own_row():
    """`summarise_metrics` (printed by `train` and scripts/train_fold.py): the last epoch marked best, not the last
    epoch run; an ensemble's figures from its own row, the members' from theirs."""
    one = pd.DataFrame({"epoch": [0, 1, 2, 3], "train_loss": [np.nan, 0.3, 0.2, 0.1],
                        "val_eer_skilled": [0.2, 0.05, 0.0412, 0.09], "val_eer_random": [0.1, 0.0, 0.0125, 0.0],
                        "strategy": ["mean", "mean", "nearest_offset", "mean"], "seconds": [1.0] * 4,
                        "best": [False, True, True, False]})
    assert train_module.summarise_metrics(one) == ("kept epoch 2 of 3: validation EER skilled 4.12%, random 1.25% "
                                                   "(nearest_offset)")
    ens = pd.DataFrame({"member": ["0", "1", "ensemble"], "kept_epoch": [3, 7, np.nan], "epochs_run": [13, 17, np.nan],
                        "val_eer_skilled": [0.0453, 0.0481, 0.0416], "strategy": ["mean_offset", "nearest_offset", "mean_offset"]})
    assert train_module.summarise_metrics(ens) == ("an ensemble of 2, members' kept epochs 3, 7: validation EER skilled 4.16% "
                                                   "(mean_offset; members 4.53%, 4.81%)")


def test_another_seed_gives_other_weights(tmp_path):
    for run, seed in (("a", "1"), ("b", "2")):
        assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / run), "--epochs", "1", "--seed", seed, *SMALL]) == 0
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert not torch.equal(a["convs.0.weight"], b["convs.0.weight"])


def _cmd(out, epochs, *extra):
    # with dropout, so that resuming must also restore the random masks' generator
    return [sys.executable, "-m", "tdnn_siamese", "train", "--data", str(SAMPLE), "--out", str(out), *extra] + (
        [] if "--resume" in extra else ["--epochs", str(epochs), "--set", "train.patience=50", "--set", "train.dropout=0.2", *SMALL])


def test_dropout_acts_in_training_only_and_is_seeded(tmp_path):
    """train.dropout zeroes activations while training (other weights than without it, the same ones again with the
    same seed); the saved model embeds deterministically, with no dropout, and the setting is range-checked."""
    runs = {"none": [], "a": ["--set", "train.dropout=0.3"], "b": ["--set", "train.dropout=0.3"]}
    for run, extra in runs.items():
        assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / run), "--epochs", "1", *SMALL, *extra]) == 0
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["convs.0.weight"], weights(tmp_path / "none")["convs.0.weight"])
    encoder = load_checkpoint(tmp_path / "a" / "model.pt").encoder
    x = torch.randn(2, 80, encoder.cfg.n_features)
    assert encoder.dropout == 0 and torch.equal(encoder(x), encoder(x))
    encoder.train()
    encoder.dropout = 0.3
    assert not torch.equal(encoder(x), encoder(x))  # the masks differ call to call in training
    encoder.eval()
    assert torch.equal(encoder(x), encoder(x))  # and are off in evaluation, whatever the setting
    for bad in ("1", "-0.1"):
        with pytest.raises(ConfigError, match="dropout must be in"):
            RunConfig.from_sections(apply_sets({}, [f"train.dropout={bad}"]))


def test_member_reseeds_training_but_not_the_split_or_the_validation_draws(tmp_path):
    """train.member > 0 trains another model for the same validation writers and reference draws (an ensemble's
    member): other initial weights and episodes, the same ones again for the same member; member 0 is the seed alone."""
    runs = {"m0": [], "m1": ["--set", "train.member=1"], "m1b": ["--set", "train.member=1"], "m2": ["--set", "train.member=2"]}
    for run, extra in runs.items():
        assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / run), "--epochs", "1", *SMALL, *extra]) == 0
    assert_same_weights(weights(tmp_path / "m1"), weights(tmp_path / "m1b"))
    w = {r: weights(tmp_path / r)["convs.0.weight"] for r in ("m0", "m1", "m2")}
    assert not torch.equal(w["m0"], w["m1"]) and not torch.equal(w["m1"], w["m2"])
    cfgs = {m: RunConfig.from_sections(apply_sets({}, [f"train.member={m}"])) for m in (0, 1)}
    preps = {m: train_module.prepare(SAMPLE, c) for m, c in cfgs.items()}
    assert np.array_equal(preps[0].val_rows, preps[1].val_rows) and np.array_equal(preps[0].train_rows, preps[1].train_rows)
    assert cfgs[0].train.init_seed == cfgs[0].train.seed and cfgs[1].train.init_seed != cfgs[0].train.seed
    assert cfgs[1].train.stream == [0, 1] and cfgs[0].train.stream == [0]
    old = RunConfig.from_sections({}).to_dict()
    del old["train"]["member"]
    assert RunConfig.from_dict(old).train.member == 0
    with pytest.raises(ConfigError, match="member must be"):
        RunConfig.from_sections(apply_sets({}, ["train.member=-1"]))


def test_learn_writers_keeps_a_seeded_subset_and_the_validation_writers():
    """train.learn_writers trains on that many of the split's training writers (for learning curves); the
    validation writers, and so the figures a run is judged by, stay the ones of the full run."""
    def writers(prep, rows):
        return set(prep.table.iloc[rows]["writer"])

    full = train_module.prepare(SAMPLE, RunConfig.from_sections({}))
    n_train = len(writers(full, full.train_rows))
    assert n_train >= 3
    some = [train_module.prepare(SAMPLE, RunConfig.from_sections(apply_sets({}, [f"train.learn_writers={n_train - 1}"])))
            for _ in range(2)]
    assert np.array_equal(some[0].train_rows, some[1].train_rows)  # seeded
    kept = writers(some[0], some[0].train_rows)
    assert len(kept) == n_train - 1 and kept < writers(full, full.train_rows)
    assert np.array_equal(some[0].val_rows, full.val_rows)
    assert set(some[0].table.iloc[some[0].train_rows].index) == set(full.table[full.table["writer"].isin(kept)].index)
    same = train_module.prepare(SAMPLE, RunConfig.from_sections(apply_sets({}, [f"train.learn_writers={n_train}"])))
    assert np.array_equal(same.train_rows, full.train_rows)
    with pytest.raises(ConfigError, match=f"learn_writers is {n_train + 1} but the split leaves {n_train} training writers"):
        train_module.prepare(SAMPLE, RunConfig.from_sections(apply_sets({}, [f"train.learn_writers={n_train + 1}"])))
    with pytest.raises(ConfigError, match="learn_writers must be"):
        RunConfig.from_sections(apply_sets({}, ["train.learn_writers=-1"]))
    old = RunConfig.from_sections({}).to_dict()
    del old["train"]["learn_writers"]
    assert RunConfig.from_dict(old).train.learn_writers == 0


def test_the_offset_weight_sets_validations_offsets_and_is_stored_in_the_model(tmp_path):
    """train.offset_weight is the share of the references' spread the offset strategies add in validation (so in
    the model's calibration scores), and the model file keeps it for the verifier to score with."""
    cfg = RunConfig.from_sections(apply_sets({}, ["train.val_fraction=0.4", "model.channels=[16,16,16,16,32]", "model.members=1",
                                                  "model.embedding_dim=16", "train.val_k=3", "train.val_draws=2"]))
    prep = train_module.prepare(SAMPLE, cfg)
    enc = train_module._new_encoder(cfg.model, 3)
    enc.set_input_stats(*train_module.input_stats([prep.seqs[i] for i in prep.train_rows]))
    shift = {}
    for w in (0.25, 0.5):
        val = train_module.validate(enc, prep, RunConfig(cfg.features, cfg.model, cfg.train.replace(offset_weight=w)))
        for base in ("mean", "nearest"):
            shift[w, base] = np.concatenate([np.subtract(val.scores[f"{base}_offset"][k], val.scores[base][k]) for k in ("genuine", "skilled")])
    for base in ("mean", "nearest"):
        assert shift[0.25, base].min() >= 0 and np.ptp(shift[0.25, base]) > 0  # a per-writer shift, writers differ
        np.testing.assert_allclose(shift[0.5, base], 2 * shift[0.25, base], rtol=1e-4, atol=1e-7)  # float32 scores
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "r"), "--epochs", "1", *SMALL_TRAIN,
                 "--set", "train.offset_weight=0.5"]) == 0
    assert load_checkpoint(tmp_path / "r" / "model.pt").offset_weight == 0.5
    with pytest.raises(ConfigError, match="offset_weight must be a finite number >= 0"):
        RunConfig.from_sections(apply_sets({}, ["train.offset_weight=-0.1"]))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="offset_weight must be a finite number >= 0"):
            cfg.train.replace(offset_weight=bad)


@pytest.mark.slow
def test_sigkill_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    epochs = 8
    subprocess.run(_cmd(tmp_path / "straight", epochs), check=True, capture_output=True, timeout=600)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(run, epochs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it somewhere after the first epoch was saved
        if (run / "metrics.csv").exists() and len(pd.read_csv(run / "metrics.csv")) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(run / "model.pt").encoder is not None  # readable right after the kill
    done = len(pd.read_csv(run / "metrics.csv"))
    assert done < epochs, "the run finished before it could be killed; the test proves nothing"
    r = subprocess.run(_cmd(run, epochs, "--resume"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == list(range(0, epochs + 1))  # epoch 0: initial weights
    assert_same_weights(weights(run), weights(tmp_path / "straight"))


@pytest.mark.parametrize("keep_initial", [False, True])
def test_epoch_0_is_a_baseline_unless_keep_initial(tmp_path, monkeypatch, keep_initial):
    """The initial weights validate best here (scripted validation EERs: 1%, then 20%, 30%, ...). By default they are
    only the baseline: epoch 1 is kept and patience (2) counts from it; with keep_initial (as runs before the setting)
    epoch 0 is kept and patience counts from it."""
    real_validate, calls = train_module.validate, []

    def scripted(*args, **kw):
        v = real_validate(*args, **kw)
        calls.append(len(calls))
        return dataclasses.replace(v, eer_skilled=0.01 if len(calls) == 1 else 0.1 * len(calls))

    monkeypatch.setattr(train_module, "validate", scripted)
    run = tmp_path / "run"
    assert main(["train", "--data", str(SAMPLE), "--out", str(run), "--epochs", "6", "--set", "train.patience=2",
                 "--set", f"train.keep_initial={str(keep_initial).lower()}", *SMALL]) == 0
    m = pd.read_csv(run / "metrics.csv")
    kept = 0 if keep_initial else 1
    assert m.loc[m["best"], "epoch"].tolist() == [kept]
    assert m["epoch"].max() == kept + 2  # stopped by patience two epochs after the kept one
    assert load_checkpoint(run / "model.pt").provenance["best_epoch"] == kept


def test_run_folder_is_never_overwritten_and_resume_keeps_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(SAMPLE), "--out", str(run), "--epochs", "1", *SMALL]) == 0
    before = (run / "model.pt").read_bytes()
    assert main(["train", "--data", str(SAMPLE), "--out", str(run), "--epochs", "1", *SMALL]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "model.pt").read_bytes() == before
    assert main(["train", "--data", str(SAMPLE), "--out", str(run), "--resume", "--epochs", "3"]) == 2
    assert "saved config.json" in capsys.readouterr().err
    assert main(["train", "--data", str(SAMPLE), "--out", str(run), "--resume"]) == 0  # already finished: nothing to do
    assert (run / "model.pt").read_bytes() == before


def test_config_sections_sets_and_errors(tmp_path):
    cfg = RunConfig.from_sections(apply_sets({}, ["model.preset=bromley", "train.lr=0.01", "train.mix=[0.6,0.3,0.1]"]))
    assert cfg.model.preset == "bromley" and cfg.features.n_steps == 200 and cfg.model.n_features == 8 and not cfg.features.znorm
    assert cfg.train.lr == 0.01 and cfg.train.mix == (0.6, 0.3, 0.1)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # what --resume reads back from config.json
    cfg = RunConfig.from_sections({"features": {"feature_set": "extended"}})
    assert cfg.model.n_features == 13 and cfg.features.n_steps is None  # the modern preset reads 100 Hz, variable length
    assert cfg.features.znorm and not RunConfig.from_sections(apply_sets({}, ["features.znorm=false"])).features.znorm
    assert cfg.train.epochs == 34 and RunConfig.from_sections(apply_sets({}, ["model.pooling=stats"])).train.epochs == 40
    for bad, msg in [(["train.lr=fast"], "TrainConfig.lr"), (["optim.lr=1"], "unknown config section"), (["lr=1"], "section.key=value"),
                     (["train.epoch=3"], "unknown TrainConfig key"), (["model.n_features=3"], "follows from the feature set"),
                     (["train.loss=bromley", "train.distance=euclidean"], "needs distance 'cosine'")]:
        with pytest.raises(ConfigError, match=msg):
            RunConfig.from_sections(apply_sets({}, bad))
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nepochs = 3\nloss = "contrastive_squared"\n[model]\npreset = "bromley"\n')
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "r"), "--config", str(toml), "--set", "train.epochs=1"]) == 0
    saved = (tmp_path / "r" / "config.json").read_text()
    assert '"loss": "contrastive_squared"' in saved and '"epochs": 1' in saved and '"preset": "bromley"' in saved


def test_read_gives_the_saved_config_and_names_the_file_it_cannot_read(tmp_path):
    cfg = RunConfig.from_sections(apply_sets({}, ["train.lr=0.01"]))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert RunConfig.read(path) == cfg
    unfit = {**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "n_features": 3}}  # a model that does not fit its features
    for text, msg in [(None, "No such file"), ("{not json", "Expecting property name"), ('{"train": {}}', "exactly the sections"),
                      (json.dumps(unfit), "model.n_features is 3")]:
        if text is not None:
            path.write_text(text)
        else:
            path.unlink()
        with pytest.raises(ConfigError, match=msg) as e:
            RunConfig.read(path)
        assert str(e.value).startswith(f"{path}: not a readable run configuration")


def test_default_features_need_pressure_and_the_error_says_what_to_do(tmp_path, capsys):
    """The default (modern preset, rich features) on a corpus without pressure: one line, exit 2, the way out."""
    manifest = pd.read_csv(SAMPLE / "manifest.csv", dtype=str)
    manifest = manifest[manifest.writer.isin(sorted(manifest.writer.unique())[:4])]
    for rel in manifest["path"]:
        dst = tmp_path / "corpus" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        pd.read_csv(SAMPLE / rel)[["t", "x", "y", "pen_down"]].to_csv(dst, index=False)
    manifest.to_csv(tmp_path / "corpus" / "manifest.csv", index=False)
    assert main(["train", "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "run"), "--epochs", "1", *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs pressure" in err and "--set features.feature_set=bromley" in err
    assert main(["train", "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "run2"), "--epochs", "1",
                 "--set", "features.feature_set=bromley", *SMALL]) == 0


def test_fixed_length_shorter_than_the_encoder_needs_is_a_config_error():
    with pytest.raises(ConfigError, match="needs at least 101 steps"):
        RunConfig.from_sections(apply_sets({}, ["model.preset=bromley", "model.segments=8", "features.n_steps=60"]))


def test_init_starts_from_a_model_file_and_refuses_another_architecture(tmp_path, capsys):
    """train.init fine-tunes a model file: epoch 0 validates ITS weights; a different architecture is a ConfigError."""
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "pre"), "--epochs", "1", "--seed", "3", *SMALL]) == 0
    pre = tmp_path / "pre" / "model.pt"
    still = ["--epochs", "1", "--seed", "5", "--set", "train.lr=1e-12", "--set", "train.ema=0", *SMALL]  # (almost) no learning
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "ft"), "--set", f"train.init={pre}", *still]) == 0
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "rnd"), *still]) == 0
    ft, rnd, p = weights(tmp_path / "ft"), weights(tmp_path / "rnd"), weights(tmp_path / "pre")
    for k in p:  # the fine-tuned run started from the model file (input statistics included), not from seed 5
        torch.testing.assert_close(ft[k], p[k], rtol=0, atol=1e-6)
    assert not torch.allclose(rnd["convs.0.weight"], p["convs.0.weight"])
    ck = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert len(ck.provenance["init_sha256"]) == 64 and load_checkpoint(tmp_path / "rnd" / "model.pt").provenance["init_sha256"] == ""
    capsys.readouterr()
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "bad"), "--epochs", "1", "--set", f"train.init={pre}",
                 *SMALL, "--set", "model.embedding_dim=8"]) == 2
    err = capsys.readouterr().err
    assert "train.init" in err and "model.embedding_dim" in err and "Traceback" not in err
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "gone"), "--epochs", "1", "--set",
                 f"train.init={tmp_path / 'none.pt'}", *SMALL]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_the_shipped_pretrained_model_fits_todays_defaults_and_saw_only_synthetic_writers():
    """data/pretrained/synthetic.pt (scripts/pretrain_synthetic.py) is what train.init = "synthetic" starts from: it
    must have the defaults' architecture and features (a change of defaults without rebuilding it fails here), and it
    was trained from random weights on synthetic writers only, never on a real corpus. The default is random weights."""
    assert RunConfig.from_sections({}).train.init == ""
    cfg = RunConfig.from_sections(apply_sets({}, [f"train.init={SYNTHETIC_INIT}"]))
    assert resolve_init(cfg) == str(PRETRAINED)
    ck = load_checkpoint(PRETRAINED)
    assert train_module._init_mismatch(ck, cfg) is None
    prov = ck.provenance
    assert prov["init_sha256"] == "" and prov["train_writers"] and prov["val_writers"]
    assert all(w.startswith("synth") for w in prov["train_writers"] + prov["val_writers"])
    assert PRETRAINED.stat().st_size < 20e6  # issue #7: a shipped pre-trained model is at most 20 MB


def test_synthetic_init_falls_back_to_random_weights_for_other_settings_and_says_so(caplog):
    """A WARNING, so the command line shows it at its default verbosity."""
    small = RunConfig.from_sections(apply_sets({}, ["model.embedding_dim=16", "train.init=synthetic"]))
    with caplog.at_level(logging.INFO, logger="tdnn_siamese.train"):
        assert resolve_init(small) == ""
    assert "model.embedding_dim = 32 but this run uses 16" in caplog.text and "random initial weights" in caplog.text
    assert all(r.levelno == logging.WARNING for r in caplog.records if "random initial weights" in r.getMessage())
    assert resolve_init(RunConfig.from_sections(apply_sets({}, ["train.init="]))) == ""
    assert resolve_init(RunConfig.from_sections(apply_sets({}, ["train.init=some/model.pt"]))) == "some/model.pt"


def test_synthetic_init_without_the_shipped_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "PRETRAINED", tmp_path / "gone" / "synthetic.pt")
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "r"), "--epochs", "1", "--set", "train.init=synthetic"]) == 2
    err = capsys.readouterr().err
    assert "train.init = 'synthetic'" in err and "missing" in err and "train.init to" in err and "Traceback" not in err


def test_a_damaged_shipped_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "synthetic.pt"
    bad.write_bytes(b"not a model")
    monkeypatch.setattr(train_module, "PRETRAINED", bad)
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "r"), "--epochs", "1", "--set", "train.init=synthetic"]) == 2
    err = capsys.readouterr().err
    assert "train.init = 'synthetic'" in err and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "r" / "config.json").exists()  # refused before anything was written


def test_train_init_synthetic_starts_from_the_shipped_model(tmp_path):
    """train.init = "synthetic": epoch 0 validates the shipped weights (input statistics included), the model file
    records the shipped file's SHA-256; the default run starts from seeded random weights instead."""
    still = ["--epochs", "1", "--set", "train.lr=1e-12", "--set", "train.ema=0", "--set", "train.pairs_per_epoch=64",
             "--set", "model.members=1"]  # one encoder (an ensemble's members start from the same file)
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "ft"), "--set", "train.init=synthetic", *still]) == 0
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "rnd"), *still]) == 0
    ft, rnd, shipped = weights(tmp_path / "ft"), weights(tmp_path / "rnd"), load_checkpoint(PRETRAINED).encoder.state_dict()
    for k in shipped:
        torch.testing.assert_close(ft[k], shipped[k], rtol=0, atol=1e-6)
    assert not torch.allclose(rnd["convs.0.weight"], shipped["convs.0.weight"])
    prov = load_checkpoint(tmp_path / "ft" / "model.pt").provenance
    assert prov["init_sha256"] == hashlib.sha256(PRETRAINED.read_bytes()).hexdigest()
    assert load_checkpoint(tmp_path / "rnd" / "model.pt").provenance["init_sha256"] == ""


def test_template_loss_trains_on_episodes_and_checks_its_settings(tmp_path, capsys):
    """loss "template": the episode loss falls from epoch 1 to 2 and the run writes a usable model;
    a scoring strategy that needs more references than val_k is refused."""
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "t"), "--epochs", "2", "--loss", "template", *SMALL]) == 0
    m = pd.read_csv(tmp_path / "t" / "metrics.csv")
    assert m["train_loss"].iloc[1:].notna().all() and (m["train_loss"].iloc[1:] > 0).all()
    assert m["train_loss"].iloc[2] < m["train_loss"].iloc[1]  # it learns
    assert load_checkpoint(tmp_path / "t" / "model.pt").scoring in STRATEGIES
    capsys.readouterr()
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "bad"), "--loss", "template", "--set", "train.val_k=1", "--set", "train.scoring=wnorm", *SMALL]) == 2
    assert "needs 2 references" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown scoring"):
        RunConfig.from_sections({"train": {"scoring": "median"}})


def test_validation_chooses_among_the_listed_strategies_and_calibrates_them_all(caplog, monkeypatch):
    """val_strategies: the model's strategy is the listed one of lowest validation EER; () lists every usable
    strategy; every usable strategy's scores are kept for calibration. When the writers allow fewer references than
    the listed strategies need, validation says so and chooses among the usable ones. Bad lists are refused."""
    from tdnn_siamese.metrics import eer

    base = RunConfig.from_sections(apply_sets({}, ["train.val_fraction=0.4", "model.channels=[16,16,16,16,32]", "model.members=1",
                                                   "model.embedding_dim=16", "train.val_k=3", "train.val_draws=2"]))
    prep = train_module.prepare(SAMPLE, base)
    enc = train_module._new_encoder(base.model, 3)
    enc.set_input_stats(*train_module.input_stats([prep.seqs[i] for i in prep.train_rows]))

    def run(**kw):
        return train_module.validate(enc, prep, RunConfig(base.features, base.model, base.train.replace(**kw)))

    every = run(val_strategies=())
    assert set(every.scores) == set(usable_strategies("dtw"))
    for listed in [("mean",), ("nearest",), ("mean", "wnorm"), ("mean_offset", "nearest_offset")]:
        v = run(val_strategies=listed)
        assert v.strategy in listed and set(v.scores) == set(every.scores)
        for s in every.scores:  # the same weights and draws: the same scores whatever is listed
            np.testing.assert_allclose(v.scores[s]["skilled"], every.scores[s]["skilled"])
        if len(listed) == 1:
            assert v.threshold == pytest.approx(eer(every.scores[listed[0]]["genuine"], every.scores[listed[0]]["skilled"])[1], rel=1e-5)
    each = {s: run(val_strategies=(s,)) for s in every.scores}
    assert every.key == min(v.key for v in each.values())  # () chooses among all of them
    assert all(v.strategy == s for s, v in each.items())
    val = prep.table.iloc[prep.val_rows]  # validation writers cut to 2 genuine signatures each: 1 reference at most
    nth = val[val.label == "genuine"].groupby("writer").cumcount()
    dropped = set(nth[nth >= 2].index)
    few = dataclasses.replace(prep, val_rows=np.asarray([i for i in prep.val_rows if i not in dropped]))
    with caplog.at_level("WARNING"):
        one_ref = train_module.validate(enc, few, RunConfig(base.features, base.model, base.train))
    assert one_ref.strategy in ("mean", "nearest") and "too few for val_strategies mean_offset, nearest_offset" in caplog.text
    reversed_ = run(val_strategies=("nearest_offset", "mean_offset"))  # the order listed does not matter, ties included
    assert reversed_.strategy == run(val_strategies=("mean_offset", "nearest_offset")).strategy
    real_draw_scores = train_module.draw_scores

    def nearest_as_mean(*args):  # "nearest" scored exactly as "mean": a tie
        out = real_draw_scores(*args)
        return [{**d, "nearest": d["mean"]} for d in out]

    monkeypatch.setattr(train_module, "draw_scores", nearest_as_mean)
    assert run(val_strategies=("nearest", "mean")).strategy == "mean"  # the earlier one in STRATEGIES wins a tie
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="unknown strategy 'median'"):
        RunConfig.from_sections({"train": {"val_strategies": ["mean", "median"]}})
    with pytest.raises(ConfigError, match="lists a strategy twice"):
        RunConfig.from_sections({"train": {"val_strategies": ["mean", "mean"]}})
    with pytest.raises(ConfigError, match="cannot score with dtw"):
        RunConfig.from_sections({"train": {"val_strategies": ["gaussian"]}})
    with pytest.raises(ConfigError, match=r"val_strategies wnorm need 2 references but val_k is 1; set train.val_strategies"):
        RunConfig.from_sections({"train": {"val_strategies": ["mean", "wnorm"], "val_k": 1, "scoring": "mean"}})
    assert RunConfig.from_sections({"model": {"pooling": "stats"}}).train.val_strategies == ()  # pooled: as measured


def test_config_difference_names_the_first_setting_that_differs():
    """What a refused resume (training or experiment) names: the first differing setting, section by section."""
    now = RunConfig.from_sections({}).to_dict()
    assert config_difference(now, now) is None
    old = RunConfig.from_sections(apply_sets({}, ["features.znorm=false", "train.lr=0.001"])).to_dict()
    assert config_difference(old, now) == "features.znorm = False there, True now"
    del old["features"]["znorm"]
    assert config_difference(old, now) == "features.znorm = None there, True now"
    assert config_difference(now, RunConfig.from_sections(apply_sets({}, ["train.lr=0.001"])).to_dict()) == \
        "train.lr = 0.0003 there, 0.001 now"
    assert config_difference(None, now) == "its saved settings cannot be read"


def test_validation_averages_the_eers_of_several_reference_draws():
    """val_draws = R: the validation EER of every strategy is the mean of R draws' EERs, each draw scored as a
    verifier would (template_scores on that draw's references); the threshold and the calibration scores are those
    of the R draws pooled; val_draws = 1 is the first-k protocol."""
    from tdnn_siamese.distances import Distance
    from tdnn_siamese.metrics import eer
    from tdnn_siamese.model import embed_all
    from tdnn_siamese.protocols import sk_protocol, sk_protocols
    from tdnn_siamese.verifier import template_scores

    cfg = RunConfig.from_sections(apply_sets({}, ["train.val_fraction=0.4", "model.channels=[16,16,16,16,32]", "model.members=1",
                                                  "model.embedding_dim=16", "train.val_k=3"]))  # the sample's
    #   writers have 5 genuine signatures of session 1: draws of 3 among them differ, draws of 5 would not
    prep = train_module.prepare(SAMPLE, cfg)
    enc = train_module._new_encoder(cfg.model, 3)
    enc.set_input_stats(*train_module.input_stats([prep.seqs[i] for i in prep.train_rows]))
    table = prep.table.iloc[prep.val_rows].reset_index(drop=True)
    emb = embed_all(enc, [prep.seqs[i] for i in prep.val_rows])
    dist = Distance.for_encoder(cfg.train.distance, cfg.model.frame_dim)

    def by_hand(proto, strategy):
        sc = {"genuine": [], "skilled": [], "random": []}
        for w, refs in proto.references.items():
            t = proto.trials[proto.trials.writer == w]
            for kind, v in zip(t["kind"], template_scores(emb[refs], emb[t["query"].tolist()], dist, strategy).tolist()):
                sc[kind].append(v)
        return sc

    one = train_module.validate(enc, prep, RunConfig(cfg.features, cfg.model, cfg.train.replace(val_draws=1)))
    first = by_hand(sk_protocol(table, 3), one.strategy)
    np.testing.assert_allclose(one.scores[one.strategy]["skilled"], first["skilled"], rtol=1e-5)
    assert one.eer_skilled == pytest.approx(eer(first["genuine"], first["skilled"])[0])
    four = train_module.validate(enc, prep, RunConfig(cfg.features, cfg.model, cfg.train.replace(val_draws=4)))
    protos = sk_protocols(table, 3, 4, cfg.train.seed)
    assert len({tuple(p.references[w]) for p in protos for w in p.references}) > len(protos[0].references)  # draws differ
    for strategy in four.scores:
        draws = [by_hand(p, strategy) for p in protos]
        pooled = {k: sum((d[k] for d in draws), []) for k in ("genuine", "skilled", "random")}
        np.testing.assert_allclose(four.scores[strategy]["genuine"], pooled["genuine"], rtol=1e-5)
        np.testing.assert_allclose(four.scores[strategy]["skilled"], pooled["skilled"], rtol=1e-5)
        mean_eer = np.mean([eer(d["genuine"], d["skilled"])[0] for d in draws])
        if strategy == four.strategy:
            assert four.eer_skilled == pytest.approx(mean_eer)
            assert four.threshold == pytest.approx(eer(pooled["genuine"], pooled["skilled"])[1], rel=1e-5)
            assert four.eer_random == pytest.approx(np.mean([eer(d["genuine"], d["random"])[0] for d in draws]))
        elif strategy in cfg.train.val_strategies:
            assert four.eer_skilled <= mean_eer + 1e-9  # the kept strategy is the best one listed
    assert four.strategy in cfg.train.val_strategies
    assert set(four.scores) == set(usable_strategies(dist.kind))  # every strategy calibrated, chosen among the listed
    assert len(four.scores[four.strategy]["genuine"]) == 4 * len(one.scores[one.strategy]["genuine"])
    every = train_module.validate(enc, prep, RunConfig(cfg.features, cfg.model, cfg.train.replace(val_draws=4, val_draw_pool="all")))
    drawn = [by_hand(p, every.strategy) for p in sk_protocols(table, 3, 4, cfg.train.seed, pool="all")]
    np.testing.assert_allclose(every.scores[every.strategy]["skilled"], sum((d["skilled"] for d in drawn), []), rtol=1e-5)
    assert every.eer_skilled == pytest.approx(np.mean([eer(d["genuine"], d["skilled"])[0] for d in drawn]))


def test_a_config_saved_before_val_draws_reads_back_with_one_draw_unlike_todays_default():
    """config.json of a run from before val_draws has no such key: it validated with one draw, which is what it
    reads back as, so resuming it or mixing it into an experiment with today's default (10 draws) is refused."""
    now = RunConfig.from_sections({}).to_dict()
    assert now["train"]["val_draws"] == 10
    old = RunConfig.from_sections({}).to_dict()
    del old["train"]["val_draws"]
    assert RunConfig.from_dict(old).train.val_draws == 1
    assert config_difference(RunConfig.from_dict(old).to_dict(), now) == "train.val_draws = 1 there, 10 now"
    with pytest.raises(ConfigError, match="val_draws"):
        RunConfig.from_sections(apply_sets({}, ["train.val_draws=0"]))


def test_resume_of_a_fine_tuned_run_needs_no_init_file_and_keeps_its_hash(tmp_path):
    """--resume of a fine-tuned run works with the init file gone (the weights come from train_state.pt);
    the provenance keeps the hash taken when training started."""
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "pre"), "--epochs", "1", *SMALL]) == 0
    init = tmp_path / "init.pt"
    init.write_bytes((tmp_path / "pre" / "model.pt").read_bytes())
    ft = ["--set", f"train.init={init}", "--set", "train.patience=50", *SMALL]
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "full"), "--epochs", "2", *ft]) == 0
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "run"), "--epochs", "2", *ft]) == 0
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    full_hash = load_checkpoint(tmp_path / "full" / "model.pt").provenance["init_sha256"]
    assert state["init_sha256"] == full_hash and len(full_hash) == 64
    import hashlib
    assert full_hash == hashlib.sha256(init.read_bytes()).hexdigest()
    init.unlink()
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert load_checkpoint(tmp_path / "run" / "model.pt").provenance["init_sha256"] == full_hash


DTW = ["--distance", "dtw", "--set", "model.pooling=frames", "--set", "model.segments=8", "--set", "train.scoring=mean"]


def test_dtw_over_frames_trains_verifies_and_checks_its_settings(tmp_path, capsys):
    """distance "dtw" with "frames" pooling: a model that learns, stores only the strategies DTW can score, and verifies."""
    from tdnn_siamese.verifier import Verifier, VerifierError

    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "d"), "--epochs", "2", *DTW, *SMALL]) == 0
    m = pd.read_csv(tmp_path / "d" / "metrics.csv")
    assert m["train_loss"].iloc[2] < m["train_loss"].iloc[1]
    ck = load_checkpoint(tmp_path / "d" / "model.pt")
    assert ck.distance == "dtw" and set(ck.calibration) == {"mean", "nearest", "wnorm", "mean_offset", "nearest_offset"}
    v = Verifier.from_checkpoint(tmp_path / "d" / "model.pt")
    assert v.encoder.cfg.output_dim == 8 * 16  # 8 frames of 16
    table = datasets.load(SAMPLE)
    rows = table[table.writer == datasets.writers(table)[0]]
    gen = [datasets.read_row(r) for r in rows[rows.label == "genuine"].sort_values("number").to_dict("records")]
    t = v.enroll("w", gen[:5])
    s = v.score_many(t, gen[5:7])
    assert s.shape == (2,) and np.isfinite(s).all()
    assert v.verify(t, gen[5]).score == pytest.approx(s[0], abs=1e-5)  # one at a time as in a batch
    with pytest.raises(VerifierError, match="cannot score"):
        Verifier.from_checkpoint(tmp_path / "d" / "model.pt", strategy="gaussian")
    for sets, msg in ((["--distance", "cosine"], "go together"), (["--distance", "dtw", "--set", "model.pooling=stats"], "go together"),
                      ([*DTW, "--set", "train.scoring=gaussian"], "cannot score frame sequences")):
        capsys.readouterr()
        assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "bad"), *sets, *SMALL]) == 2
        assert msg in capsys.readouterr().err


def test_episode_settings_reach_the_sampler_and_are_checked():
    """train.episode_genuine / _skilled / _random set how many queries of each kind every training episode draws."""
    cfg = RunConfig.from_sections(apply_sets({}, ["train.episode_genuine=2", "train.episode_skilled=1", "train.episode_random=3"]))
    prep = train_module.prepare(SAMPLE, cfg)
    sampler, _ = train_module.objective(prep, cfg)
    table = prep.table.iloc[prep.train_rows].reset_index(drop=True)
    labels, writers = table["label"].to_numpy(), table["writer"].to_numpy()
    eps = sampler.sample(20, np.random.default_rng(0))
    assert eps
    for e in eps:
        own = writers[e.references[0]]
        assert len(e.genuine) == 2 and len(e.impostors) == 4
        assert labels[e.impostors[0]] == "skilled" and writers[e.impostors[0]] == own
        assert all(labels[i] == "genuine" and writers[i] != own for i in e.impostors[1:])
    for bad in (["train.episode_genuine=0"], ["train.episode_skilled=0", "train.episode_random=0"], ["train.episode_random=-1"]):
        with pytest.raises(ConfigError, match="an episode needs"):
            RunConfig.from_sections(apply_sets({}, bad))
    old = RunConfig.from_sections({}).to_dict()
    for key in ("episode_genuine", "episode_skilled", "episode_random"):
        del old["train"][key]
    back = RunConfig.from_dict(old).train  # a run saved before the settings had 5, 5 and 2, whatever the defaults become
    assert (back.episode_genuine, back.episode_skilled, back.episode_random) == (5, 5, 2)
    assert {k: train_module.LATER_TRAIN_FIELDS[k] for k in ("episode_genuine", "episode_skilled", "episode_random")} == {
        "episode_genuine": 5, "episode_skilled": 5, "episode_random": 2}


def test_episode_pool_reaches_the_sampler_reads_back_as_all_and_is_checked():
    """train.episode_pool=session: every training episode enrolls from one session of the writer (the sample corpus
    has two); runs saved before the setting drew references among all genuines and read back as "all"."""
    cfg = RunConfig.from_sections(apply_sets({}, ["train.episode_pool=session"]))
    prep = train_module.prepare(SAMPLE, cfg)
    sampler, _ = train_module.objective(prep, cfg)
    table = prep.table.iloc[prep.train_rows].reset_index(drop=True)
    eps = sampler.sample(20, np.random.default_rng(0))
    ses = table["session"]
    assert eps and all(ses.iloc[e.references].nunique() == 1 for e in eps)
    # a session holds 5 genuines, all references (val_k 5): the queries are the other session's
    assert all(set(ses.iloc[e.genuine]) == {3 - ses.iloc[e.references[0]]} for e in eps)
    assert {ses.iloc[e.references[0]] for e in eps} == {1, 2}
    now = RunConfig.from_sections({}).to_dict()
    old = RunConfig.from_sections({}).to_dict()
    del old["train"]["episode_pool"]
    assert RunConfig.from_dict(old).train.episode_pool == "all" == now["train"]["episode_pool"]
    with pytest.raises(ConfigError, match="episode_pool must be one of"):
        RunConfig.from_sections(apply_sets({}, ["train.episode_pool=sessions"]))


def test_a_config_saved_before_session_kept_draws_reads_back_drawing_from_all_genuines():
    """Runs before val_draw_pool drew validation references among all genuines: they read back as "all", so resuming
    them under today's "sessions" is refused as another validation measure."""
    now = RunConfig.from_sections({}).to_dict()
    assert now["train"]["val_draw_pool"] == "sessions"
    old = RunConfig.from_sections({}).to_dict()
    del old["train"]["val_draw_pool"]
    assert config_difference(RunConfig.from_dict(old).to_dict(), now) == "train.val_draw_pool = 'all' there, 'sessions' now"
    with pytest.raises(ConfigError, match="val_draw_pool must be one of"):
        RunConfig.from_sections(apply_sets({}, ["train.val_draw_pool=some"]))


def test_a_config_saved_before_val_strategies_reads_back_choosing_among_every_strategy():
    """Runs before val_strategies chose among every usable strategy: they read back as [], so resuming them (or mixing
    their folds into an experiment) under today's two offsets is refused, naming the setting."""
    now = RunConfig.from_sections({}).to_dict()
    assert now["train"]["val_strategies"] == ["mean_offset", "nearest_offset"]
    old = RunConfig.from_sections({}).to_dict()
    del old["train"]["val_strategies"]
    assert RunConfig.from_dict(old).train.val_strategies == ()
    assert config_difference(RunConfig.from_dict(old).to_dict(), now) == \
        "train.val_strategies = [] there, ['mean_offset', 'nearest_offset'] now"
    assert RunConfig.from_sections(apply_sets({}, ["train.val_strategies=[]"])).train.val_strategies == ()


def test_a_config_saved_before_keep_initial_reads_back_with_epoch_0_a_candidate():
    """Runs before keep_initial could keep epoch 0's initial weights: they read back as true, so resuming them under
    today's default is refused, naming the setting."""
    now = RunConfig.from_sections({}).to_dict()
    assert now["train"]["keep_initial"] is False
    old = RunConfig.from_sections({}).to_dict()
    del old["train"]["keep_initial"]
    assert config_difference(RunConfig.from_dict(old).to_dict(), now) == "train.keep_initial = True there, False now"


def test_episode_imitations_reach_the_sampler_train_and_are_checked(tmp_path):
    """train.episode_imitations: that many imitations of the writer's genuines join every episode's impostors;
    a run with them is seeded and differs from one without; runs saved before the setting read back with none."""
    cfg = RunConfig.from_sections(apply_sets({}, ["train.episode_imitations=2"]))
    prep = train_module.prepare(SAMPLE, cfg)
    sampler, _ = train_module.objective(prep, cfg)
    eps = sampler.sample(5, np.random.default_rng(0))
    assert eps and all(len(e.imitations) == 2 for e in eps)
    rows = np.concatenate([e.rows for e in eps])
    mask = np.concatenate([e.is_imitation for e in eps])
    for strength in (0.0, 1.0):  # without augmentation only the imitations are new sequences
        c = RunConfig.from_sections(apply_sets({}, ["train.episode_imitations=2", f"train.augment={strength}"]))
        seqs = train_module._pair_sequences(prep, prep.train_rows[rows], c, np.random.default_rng(1), mask)
        same = [torch.equal(s, prep.seqs[i]) for s, i in zip(seqs, prep.train_rows[rows])]
        assert not any(np.asarray(same)[mask]) and (all(np.asarray(same)[~mask]) if strength == 0 else not any(same))
    plain = RunConfig.from_sections({})  # without imitations, the epoch's draws are those of runs before the setting
    a = train_module._pair_sequences(prep, prep.train_rows[rows], plain, np.random.default_rng(2), np.zeros(len(rows), bool))
    b = train_module._pair_sequences(prep, prep.train_rows[rows], plain, np.random.default_rng(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    runs = {"a": ["train.episode_imitations=2"], "b": ["train.episode_imitations=2"], "none": []}
    for run, sets in runs.items():
        args = [x for s in sets for x in ("--set", s)]
        assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / run), "--epochs", "1", *args, *SMALL_TRAIN]) == 0
    loss = {r: pd.read_csv(tmp_path / r / "metrics.csv")["train_loss"].iloc[1] for r in runs}
    assert loss["a"] == loss["b"] != loss["none"]
    for bad, msg in ((["train.episode_imitations=-1"], "none negative"), (["train.episode_imitations=true"], "episode_imitations"),
                     (["train.episode_imitations=1", "train.loss=contrastive"], "template loss")):
        with pytest.raises(ConfigError, match=msg):
            RunConfig.from_sections(apply_sets({}, bad))
    only = RunConfig.from_sections(apply_sets({}, ["train.episode_imitations=1", "train.episode_skilled=0", "train.episode_random=0"]))
    assert only.train.episode_imitations == 1  # imitations alone are impostors enough
    old = RunConfig.from_sections({}).to_dict()
    del old["train"]["episode_imitations"]
    assert RunConfig.from_dict(old).train.episode_imitations == train_module.LATER_TRAIN_FIELDS["episode_imitations"] == 0
