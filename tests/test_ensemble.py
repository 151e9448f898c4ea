"""Training an ensemble (model.members > 1): members trained apart at once, validated together, saved as one model."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tdnn_siamese.cli import main
from tdnn_siamese.config import ConfigError
from tdnn_siamese.ensemble import member_configs
from tdnn_siamese.experiment import _check_fold_init
from tdnn_siamese.model import TDNNEnsemble, load_checkpoint
from tdnn_siamese.protocols import ProtocolError
from tdnn_siamese.train import RunConfig, apply_sets, file_sha256, prepare, train, validate

from .conftest import SAMPLE, SMALL_TRAIN

SETS = [s for s in SMALL_TRAIN if s != "--set"] + ["train.epochs=2"]


def _cfg(*extra):
    return RunConfig.from_sections(apply_sets({}, SETS + list(extra)))


def _same(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_members_train_apart_and_the_ensemble_is_validated_and_saved_as_one_model(tmp_path, capfd):
    """Member 0 is the plain run of the seed (one thread each: the same weights as a one-thread run alone), member 1
    another; model.pt holds both, validated together; resume retrains nothing; other settings are refused."""
    cfg = _cfg("model.members=2")
    assert [c.train.member for c in member_configs(cfg)] == [0, 1] and all(c.model.members == 1 for c in member_configs(cfg))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        plain = train(SAMPLE, tmp_path / "plain", _cfg("model.members=1"))
        torch.set_num_threads(2)  # two members: one thread each
        capfd.readouterr()
        assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "ens"), *SMALL_TRAIN, "--epochs", "2",
                     "--set", "model.members=2"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capfd.readouterr()
    assert "trained modern TDNNs in" in out.out and "an ensemble of 2, members' kept epochs " in out.out and "member 1 epoch   2" in out.err
    ens, members = tmp_path / "ens", [tmp_path / "ens" / "members" / f"m{m}" for m in (0, 1)]
    _same(load_checkpoint(plain).encoder.state_dict(), load_checkpoint(members[0] / "model.pt").encoder.state_dict())
    ck = load_checkpoint(ens / "model.pt")
    assert isinstance(ck.encoder, TDNNEnsemble) and ck.encoder.cfg == cfg.model
    for tower, m in zip(ck.encoder.towers, members):
        _same(tower.state_dict(), load_checkpoint(m / "model.pt").encoder.state_dict())
    assert not torch.equal(ck.encoder.towers[0].proj.weight, ck.encoder.towers[1].proj.weight)
    val = validate(ck.encoder, prepare(SAMPLE, cfg), cfg)
    metrics = pd.read_csv(ens / "metrics.csv")
    assert list(metrics["member"].astype(str)) == ["0", "1", "ensemble"]
    assert metrics["val_eer_skilled"].iloc[-1] == pytest.approx(val.eer_skilled, abs=1e-6)
    assert ck.scoring == val.strategy and ck.threshold == pytest.approx(val.threshold)
    assert [m["kept_epoch"] for m in ck.provenance["members"]] == list(metrics["kept_epoch"].iloc[:2].astype(int))
    assert json.loads((ens / "config.json").read_text())["model"]["members"] == 2
    # resume: the finished members are read back, nothing retrained
    stamps = [(m / "model.pt").stat().st_mtime_ns for m in members]
    assert main(["train", "--data", str(SAMPLE), "--out", str(ens), "--resume"]) == 0
    assert [(m / "model.pt").stat().st_mtime_ns for m in members] == stamps
    _same(load_checkpoint(ens / "model.pt").encoder.state_dict(), ck.encoder.state_dict())
    with pytest.raises(ConfigError, match="train.rank_scale"):
        train(SAMPLE, ens, _cfg("model.members=2", "train.rank_scale=5"), resume=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(SAMPLE, ens, cfg)
    saved = (ens / "config.json").read_text()
    (ens / "config.json").write_text("{")  # a damaged config of the ensemble: named, not guessed around
    with pytest.raises(ConfigError, match=r"config\.json: not a readable run configuration"):
        train(SAMPLE, ens, cfg, resume=True)
    (ens / "config.json").write_text(saved)
    # a member that fails is named, with its reason, and the ensemble is not written
    (members[1] / "train_state.pt").write_bytes(b"not a state")
    (ens / "model.pt").unlink()
    with pytest.raises(ConfigError, match=r"member 1 .*cannot read the training state"):
        train(SAMPLE, ens, cfg, resume=True)
    assert not (ens / "model.pt").exists()


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the member processes through Linux's /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_killing_an_ensembles_training_stops_its_members(tmp_path, how):
    """``kill`` (SIGTERM) of `train` terminates the members' pool on its way out; SIGKILL, which nothing can catch,
    leaves the members to notice their parent is gone: either way none goes on training, orphaned, in the run
    folder that a resumed run would train again."""
    run = tmp_path / "ens"
    cmd = [sys.executable, "-m", "tdnn_siamese", "train", "--data", str(SAMPLE), "--out", str(run), *SMALL_TRAIN,
           "--set", "model.members=2", "--epochs", "500", "--set", "train.patience=500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not all((run / "members" / m / "metrics.csv").exists() for m in ("m0", "m1")):
            assert proc.poll() is None, "train ended before its members trained an epoch"
            time.sleep(0.2)
        members = _children(proc.pid)
        assert len(members) >= 2 and all(_alive(p) for p in members)
        os.kill(proc.pid, how)
        assert proc.wait(timeout=60) != 0
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in members):
            time.sleep(0.2)
        assert not [p for p in members if _alive(p)], "member processes outlived the killed train"
    finally:
        if proc.poll() is None:
            proc.kill()


_ORPHAN = """
import multiprocessing, os, sys, time
from tdnn_siamese.ensemble import _exit_with_parent

def member(started):
    time.sleep(1.5)  # the parent is gone by now, as if it died while this member was still starting
    _exit_with_parent(0.05)
    open(started, "w").write(str(os.getpid()))
    time.sleep(60)

if __name__ == "__main__":
    p = multiprocessing.get_context("spawn").Process(target=member, args=(sys.argv[1],))
    p.start()
    open(sys.argv[1] + ".pid", "w").write(str(p.pid))
    os._exit(0)  # dies at once, like SIGKILL: nothing joins or terminates the child
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="watches the member process through Linux's /proc")
def test_a_member_whose_parent_died_before_it_started_exits_at_once(tmp_path):
    """A member reads who its parent was from multiprocessing, not from getppid(): started after the parent's death
    (already reparented), it still sees that its parent is gone and exits instead of training an orphaned run."""
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    subprocess.run([sys.executable, str(script), str(tmp_path / "started")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60, check=True, cwd=Path(__file__).resolve().parent.parent)
    child = int((tmp_path / "started.pid").read_text())
    deadline = time.time() + 30
    while time.time() < deadline and _alive(child):
        time.sleep(0.1)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive and not (tmp_path / "started").exists()


@pytest.mark.slow
def test_an_ensemble_names_the_file_its_members_started_from_and_refuses_members_from_two(tmp_path):
    """model.pt's provenance holds the SHA-256 of train.init's file, as one model's does (experiment --resume checks
    a fold against it); members that started from different files (the file rebuilt between their runs) are refused."""
    init = tmp_path / "init.pt"
    shutil.copy(train(SAMPLE, tmp_path / "pre", _cfg("model.members=1", "train.epochs=1")), init)
    cfg, ens = _cfg("model.members=2", "train.epochs=1", f"train.init={init}"), tmp_path / "x" / "fold1" / "run"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        sha = file_sha256(str(init))
        assert load_checkpoint(train(SAMPLE, ens, cfg)).provenance["init_sha256"] == sha != ""
        _check_fold_init(ens.parent, sha)  # the fold resumes with the file it started from
        with pytest.raises(ProtocolError, match="started from the file with SHA-256 .* would start from random weights"):
            _check_fold_init(ens.parent, "")
        shutil.copy(ens / "members" / "m0" / "model.pt", init)  # the file rebuilt: other weights, same architecture
        shutil.rmtree(ens / "members" / "m1")
        with pytest.raises(ConfigError, match="members started from different initial models") as e:
            train(SAMPLE, ens, cfg, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert f"{ens / 'members' / 'm0'} from the file with SHA-256 {sha[:12]}" in str(e.value)
    assert load_checkpoint(ens / "model.pt").provenance["init_sha256"] == sha  # the ensemble saved before stays as it was
