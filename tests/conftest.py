"""Shared fixtures: the public SVC2004 folder (skipped with a reason when absent), the bundled sample."""

from __future__ import annotations

from pathlib import Path

import os

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("default", max_examples=150)
settings.register_profile("thorough", max_examples=3000)  # HYPOTHESIS_PROFILE=thorough pytest tests/test_formats_fuzz.py
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

from tdnn_siamese.signature import Signature

REPO = Path(__file__).resolve().parent.parent
SVC2004 = Path(os.environ.get("SVC2004_DIR", REPO.parent / "shared" / "datasets" / "svc2004-task2" / "Task2"))
SAMPLE = REPO / "data" / "sample"


def load_script(name: str):
    """``scripts/NAME.py`` imported as a module (the scripts are not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def svc_root() -> Path:
    if not SVC2004.is_dir():
        pytest.skip(f"SVC2004 Task 2 not found at {SVC2004} (research-use data, never in the repo; set SVC2004_DIR to point elsewhere)")
    return SVC2004


@pytest.fixture(scope="session")
def sample_root() -> Path:
    return SAMPLE


def make_signature(n: int = 50, seed: int = 0, channels: bool = True, **meta) -> Signature:
    """A smooth random pen trajectory at 100 Hz with one pen lift."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 10.0 + 1000.0
    phase = np.linspace(0, 4 * np.pi, n)
    x = 500 + 300 * np.cos(phase) + rng.normal(0, 5, n).cumsum()
    y = 400 + 200 * np.sin(1.5 * phase) + rng.normal(0, 5, n).cumsum()
    down = np.ones(n, bool)
    down[n // 2] = False
    extra = {}
    if channels:
        extra = {"pressure": rng.uniform(100, 900, n).round(), "azimuth": rng.uniform(0, 3600, n).round(), "altitude": rng.uniform(300, 900, n).round()}
    return Signature(t=t, x=x.round(2), y=y.round(2), pen_down=down, **extra, **meta)


SMALL_TRAIN = ["--set", "train.pairs_per_epoch=192", "--set", "train.batch_size=32", "--set", "model.channels=[16,16,16,16,32]",
               "--set", "model.embedding_dim=16", "--set", "model.members=1"]  # one encoder: ensembles in test_ensemble.py


@pytest.fixture(scope="session")
def sample_model(tmp_path_factory) -> Path:
    """A small modern TDNN trained for 2 epochs on the bundled sample (a few seconds)."""
    from tdnn_siamese.cli import main

    out = tmp_path_factory.mktemp("sample_run") / "run"
    assert main(["train", "--data", str(SAMPLE), "--out", str(out), "--epochs", "2", *SMALL_TRAIN]) == 0
    return out / "model.pt"
