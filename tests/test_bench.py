"""The speed benchmark runs end to end and writes every figure it prints (no speed is asserted here)."""

import json
import math
from pathlib import Path

import pytest

from .conftest import load_script

ROOT = Path(__file__).resolve().parent.parent


def _load_bench():
    return load_script("bench_speed")


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_flops_of_the_bromley_preset_by_hand():
    from tdnn_siamese.model import TDNNConfig

    bench = _load_bench()
    cfg = TDNNConfig.from_preset("bromley", 8)
    # 200 steps -> 64 steps (12 maps, window 11 x 8 inputs) -> 19 steps (16 maps, window 10 x 12 inputs)
    # + the mean over 19 steps of 16 maps
    assert bench.encoder_flops(cfg, 200) == 2 * (64 * 12 * 8 * 11 + 19 * 16 * 12 * 10 + 16 * 19)


@pytest.mark.slow
def test_quick_benchmark_on_the_sample(tmp_path, capsys):
    bench = _load_bench()
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--data", str(ROOT / "data" / "sample"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in ("parse", "features", "embed", "verify_tdnn", "verify_dtw", "ratio_tdnn_over_dtw", "training", "cli_cold_start", "targets"):
        assert key in res
    assert set(res["targets"]) == set(bench.TARGETS)
    values = list(_numbers({k: v for k, v in res.items() if k != "machine"}))
    assert values and all(math.isfinite(v) and v >= 0 for v in values)
    assert res["verify_tdnn"]["s05_trials"] > 0 and res["training"]["pairs_per_s"] > 0
    printed = capsys.readouterr().out
    assert "targets (issue #6)" in printed and "CLI cold start" in printed
