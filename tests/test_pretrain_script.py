"""scripts/pretrain_synthetic.py: the command that builds data/pretrained/synthetic.pt."""

import json

import torch

from tdnn_siamese.model import load_checkpoint
from tdnn_siamese.train import PRETRAINED, RunConfig, apply_sets

from .conftest import load_script


def _script():
    return load_script("pretrain_synthetic")


def test_the_script_settings_are_those_of_the_shipped_model():
    """The shipped file was trained with exactly the script's settings on today's defaults (15 epochs)."""
    mod = _script()
    shipped = json.loads(load_checkpoint(PRETRAINED).provenance["config"])
    assert RunConfig.from_dict(shipped).to_dict() == RunConfig.from_sections(apply_sets({}, mod.SETTINGS + ["train.epochs=15"])).to_dict()


def test_the_script_builds_and_installs_a_model_from_random_weights_on_synthetic_writers(tmp_path, capsys, monkeypatch):
    mod = _script()
    target = tmp_path / "installed" / "synthetic.pt"
    monkeypatch.setattr(mod, "PRETRAINED", target)
    threads = torch.get_num_threads()
    small = ["--writers", "6", "--genuine", "6", "--epochs", "1", "--set", "train.pairs_per_epoch=64"]
    assert mod.main(["--work", str(tmp_path / "w"), *small, "--threads", "1", "--install"]) == 0
    assert torch.get_num_threads() == threads  # the script's thread count does not leak into its caller
    out = capsys.readouterr().out
    model = tmp_path / "w" / "run" / "model.pt"
    assert f"fingerprint {mod.fingerprint(model)}" in out and f"installed: {target}" in out
    assert target.read_bytes() == model.read_bytes()
    ck = load_checkpoint(target)
    assert ck.provenance["init_sha256"] == "" and all(w.startswith("synth") for w in ck.provenance["train_writers"])
    # settings whose model no default run could start from are refused before anything is trained or installed
    target.unlink()
    assert mod.main(["--work", str(tmp_path / "w2"), *small, "--set", "model.embedding_dim=16", "--install"]) == 2
    err = capsys.readouterr().err
    assert "model.embedding_dim = 16, the defaults' 32" in err and not target.exists() and not (tmp_path / "w2").exists()


def test_the_script_reports_bad_settings_without_a_traceback(tmp_path, capsys):
    mod = _script()
    assert mod.main(["--work", str(tmp_path / "w"), "--writers", "3", "--genuine", "3", "--set", "train.lr=-1"]) == 2
    assert "lr" in capsys.readouterr().err
