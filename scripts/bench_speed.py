"""Speed of every hot path, side by side with the DTW baseline and with this machine's matrix-multiply rate.

Usage: python scripts/bench_speed.py [--quick] [--out FILE.json] [--data DIR] [--model MODEL.pt]

Reads the public SVC2004 Task 2 files from ../shared (or --data, or
$SVC2004_DIR); without them it falls back to the bundled synthetic sample
and says so. Every figure is the median over repeats after a warm-up run.
Measured, in order:

1. parse: files per second from disk into `Signature` objects;
2. features: signatures per second from `Signature` to features
   (``bromley`` at 200 steps, the variable-length mode, and the default
   training configuration's features);
3. embed: signatures per second through each preset's encoder, 256 at a
   time (``embed_all``, which cuts them into forward passes whose widest activations stay under 4 MB:
   40 at a time for ``modern``) and one at a time, each preset on its default feature set's channels, and the encoder's GFLOP/s beside a
   matrix-multiply GFLOP/s measured here on the same threads;
4. verify: latency of one verification (raw points in memory -> decision)
   against a writer enrolled with 5 references, p50 and p95, and the
   throughput of a whole S05 protocol run (reading files included);
5. the same for the DTW baseline, and the TDNN / DTW ratios;
6. training: pairs (for the template loss: steps) per second and the wall time of one epoch (training
   and validation) on SVC2004 writers U1-U30 with the default settings;
7. CLI cold start: wall time of ``tdnn-siamese verify`` for one file.

Speed does not depend on the weights, so without --model the encoders are
freshly initialised (seeded). The targets of issue #6 are checked and
printed; the JSON (--out) holds every figure, the machine and the targets.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from tdnn_siamese import datasets, formats  # noqa: E402
from tdnn_siamese.atomic import atomic_write_json  # noqa: E402
from tdnn_siamese.dtw import DTWVerifier  # noqa: E402
from tdnn_siamese.evaluate import score_protocols  # noqa: E402
from tdnn_siamese.features import FEATURE_SETS, FeatureConfig, extract_many  # noqa: E402
from tdnn_siamese.model import PRESET_FEATURES, TDNNConfig, build_encoder, embed_all, save_checkpoint  # noqa: E402
from tdnn_siamese.protocols import sk_protocol  # noqa: E402
from tdnn_siamese.train import RunConfig  # noqa: E402
from tdnn_siamese.verifier import Verifier  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets" / "svc2004-task2" / "Task2"
TARGETS = {  # issue #6, on 2 CPU cores
    "features_per_s": 10_000,
    "parse_files_per_s": 2_000,
    "bromley_embed_batched_per_s": 50_000,
    "modern_fraction_of_matmul": 0.30,
    "verify_p50_ms": 2.0,
    "s05_throughput_ratio_vs_dtw": 20.0,
    "cli_cold_start_s": 1.5,
}


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "platform": platform.platform()}


def corpus(data: str | None) -> tuple[Path, str]:
    """The SVC2004 folder when there is one, else the synthetic sample (and a note saying so)."""
    for cand in (data, os.environ.get("SVC2004_DIR"), SHARED):
        if cand and Path(cand).is_dir():
            return Path(cand), "SVC2004 Task 2"
    print(f"NOTE: no SVC2004 files at {SHARED} (nor --data / $SVC2004_DIR): using the synthetic sample data/sample; "
          "its files are shorter, so figures are not comparable with SVC2004 ones", file=sys.stderr)
    return ROOT / "data" / "sample", "synthetic sample (SVC2004 not found)"


# --------------------------------------------------------------------------- the encoder's arithmetic


def encoder_flops(cfg: TDNNConfig, steps: int) -> float:
    """Multiply-adds x 2 of one forward pass over ``steps`` input steps (convolutions and projection)."""
    flops, t, c_in = 0.0, steps, cfg.n_features
    for c, k, s, d in zip(cfg.channels, cfg.kernels, cfg.strides, cfg.dilations):
        t = t if cfg.padding == "same" else (t - d * (k - 1) - 1) // s + 1
        flops += 2.0 * c_in * c * k * t
        c_in = c
    flops += 2.0 * c_in * t * cfg.segments * (2 if cfg.pooling == "stats" else 1)  # pooling (segment sums of h and h^2)
    if cfg.embedding_dim:
        flops += 2.0 * cfg.output_dim * cfg.pooled_dim
    return flops


def matmul_gflops(repeats: int, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2.0 * n**3 / median_time(lambda: a @ b, repeats) / 1e9


# --------------------------------------------------------------------------- the stages


def bench_parse(files: list[Path], repeats: int) -> dict:
    t = median_time(lambda: [formats.read_signature(f) for f in files], repeats)
    return {"files": len(files), "files_per_s": len(files) / t}


def bench_features(sigs: list, repeats: int, default: FeatureConfig) -> dict:
    out = {}
    for name, cfg in (("bromley_200", FeatureConfig()), ("bromley_variable", FeatureConfig(n_steps=None)), ("default_training", default)):
        t = median_time(lambda: extract_many(sigs, cfg), repeats)
        out[name] = {"config": cfg.to_dict(), "signatures_per_s": len(sigs) / t}
    return out


def bench_embed(repeats: int, mm: float, n_single: int) -> dict:
    out = {}
    for preset in ("bromley", "modern"):
        n_feat = len(FEATURE_SETS[PRESET_FEATURES[preset]])  # modern: rich (12), bromley: bromley (8)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            enc = build_encoder(TDNNConfig.from_preset(preset, n_feat)).eval()
        batch = list(torch.randn(256, 200, n_feat))
        one = [torch.randn(1, 200, n_feat) for _ in range(n_single)]
        tb = median_time(lambda: embed_all(enc, batch), repeats)  # 256 signatures, as the toolkit embeds them
        with torch.inference_mode():
            ts = median_time(lambda: [enc(o) for o in one], repeats)
        flops = encoder_flops(enc.cfg, 200)
        gflops = flops * 256 / tb / 1e9
        out[preset] = {"batched_per_s": 256 / tb, "single_per_s": n_single / ts, "mflop_per_signature": flops / 1e6,
                       "gflop_per_s": gflops, "fraction_of_matmul": gflops / mm}
    return out


def _latencies(fn: Callable[[], object], n: int) -> np.ndarray:
    fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3


def bench_verify(method, table, proto, sigs_by_row: dict, n_lat: int, repeats: int) -> dict:
    """One query against a 5-reference template (latency), and a whole S05 run (throughput)."""
    w = sorted(proto.references)[0]
    template = method.enroll(w, [sigs_by_row[i] for i in proto.references[w]])
    query = sigs_by_row[int(proto.trials[proto.trials.writer == w]["query"].iloc[0])]
    threshold = 0.0
    lat = _latencies(lambda: method.verify(template, query, threshold), n_lat)
    n_trials = len(proto.trials)
    t = median_time(lambda: score_protocols(method, table, [proto]), repeats)

    rows = sorted({i for r in proto.references.values() for i in r} | set(proto.trials["query"].astype(int)))
    reps = dict(zip(rows, method.represent(method.features_many([sigs_by_row[i] for i in rows]))))
    pick = (lambda idx: np.stack([reps[i] for i in idx])) if isinstance(reps[rows[0]], np.ndarray) and reps[rows[0]].ndim == 1 \
        else (lambda idx: [reps[i] for i in idx])
    by_writer = [(w, pick(refs), pick(proto.trials[proto.trials.writer == w]["query"].astype(int).tolist()))
                 for w, refs in proto.references.items()]
    t_score = median_time(lambda: [method.score_reps(method.template(w, r), q) for w, r, q in by_writer], repeats)
    return {"latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p95": float(np.percentile(lat, 95)),
            "s05_trials": n_trials, "s05_seconds": t, "s05_verifications_per_s": n_trials / t,
            "s05_scoring_only_seconds": t_score, "s05_scoring_only_per_s": n_trials / t_score}


def bench_training(data: Path, cfg: RunConfig, quick: bool) -> dict:
    """Pairs per second and one epoch's wall time (training pairs + validation) on writers U1-U30."""
    from tdnn_siamese import train as tr

    table = datasets.load(data)
    names = datasets.writers(table)
    wanted = [f"U{i}" for i in range(1, 31)]
    subset = [n for n in names if n in wanted] or names[: max(3, int(0.75 * len(names)))]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = datasets.write_manifest(table[table.writer.isin(subset)].to_dict("records"), Path(tmp) / "manifest.csv")
        t0 = time.perf_counter()
        prep = tr.prepare(manifest, cfg)
        t_prep = time.perf_counter() - t0
    cfg = RunConfig(cfg.features, cfg.model.member, cfg.train)  # an epoch of one encoder: an ensemble's members train
    #   at once, each in a process of its own (tdnn_siamese.ensemble)
    tc = cfg.train
    if quick:
        tc = type(tc).from_dict({**tc.to_dict(), "pairs_per_epoch": 512})
    enc = tr._new_encoder(cfg.model, tc.seed)
    enc.set_input_stats(*tr.input_stats([prep.seqs[i] for i in prep.train_rows]))
    avg = tr._new_encoder(cfg.model, tc.seed) if tc.ema else None
    opt = torch.optim.Adam(enc.parameters(), lr=tc.lr)
    sampler, loss_fn = tr.objective(prep, RunConfig(cfg.features, cfg.model, tc))
    t0 = time.perf_counter()
    tr._train_epoch(enc, avg, opt, loss_fn, sampler, prep, RunConfig(cfg.features, cfg.model, tc), 1, None)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr.validate(avg or enc, prep, cfg)
    t_val = time.perf_counter() - t0
    steps = max(1, tc.pairs_per_epoch // tc.batch_size)
    return {"writers": len(subset), "signatures": len(prep.table), "loss": tc.loss, "pairs": tc.pairs_per_epoch,
            "pairs_per_s": tc.pairs_per_epoch / t_train, "steps_per_s": steps / t_train,
            "prepare_s": t_prep, "train_s": t_train, "validate_s": t_val,
            "epoch_s": t_train * cfg.train.pairs_per_epoch / tc.pairs_per_epoch + t_val}


def bench_cli(model: Path, refs: list[str], query: str, repeats: int) -> dict:
    exe = Path(sys.executable).with_name("tdnn-siamese")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tdnn_siamese"]
    cmd += ["verify", "--model", str(model), "--threshold", "0", "--references", *refs, "--", query]
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode not in (0, 1):
            raise SystemExit(f"CLI verify failed ({r.returncode}): {r.stderr.strip()}")
    return {"command": " ".join(cmd[:1] + cmd[1:3] + ["MODEL", "--threshold", "0", "--references", "R1..R5", "--", "FILE"]),
            "seconds_p50": float(np.median(times[1:]))}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer files, repeats and training pairs (a minute or two)")
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--data", help="SVC2004 Task2 folder (default: ../shared/datasets/svc2004-task2/Task2)")
    ap.add_argument("--model", help="a trained model.pt to time instead of freshly initialised encoders")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else 7
    t_start = time.perf_counter()

    data, data_name = corpus(args.data)
    table = datasets.load(data)
    files = [Path(p) for p in table["path"]]
    if args.quick:
        files = files[:300]
    res: dict = {"data": data_name, "quick": args.quick, "machine": machine()}
    print(f"data: {data_name} ({len(table)} files); {res['machine']['cpu']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    res["parse"] = bench_parse(files, repeats)
    sigs = [formats.read_signature(p) for p in table["path"]]
    sigs_by_row = dict(enumerate(sigs))
    default = RunConfig.from_sections({})
    res["features"] = bench_features(sigs if not args.quick else sigs[:300], repeats, default.features)
    mm = matmul_gflops(repeats)
    res["matmul_gflop_per_s"] = mm
    res["embed"] = bench_embed(repeats, mm, 20 if args.quick else 100)

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model = Path(args.model)
        else:  # a freshly initialised encoder of the default configuration
            with torch.random.fork_rng():
                torch.manual_seed(0)
                enc = build_encoder(default.model).eval()
            model = Path(tmp) / "model.pt"
            save_checkpoint(model, enc, default.features, distance=default.train.distance, threshold=0.0, scoring="mean",
                            calibration={}, provenance={"note": "untrained, for timing"},
                            offset_weight=default.train.offset_weight)
        tdnn = Verifier.from_checkpoint(model)
        rows = np.flatnonzero(table.writer.isin(datasets.writers(table)[:10])) if args.quick else np.arange(len(table))
        proto_table = table.iloc[rows].reset_index(drop=True)  # quick: S05 on 10 writers
        by_row = {i: sigs_by_row[int(j)] for i, j in enumerate(rows)}
        proto = sk_protocol(proto_table, 5)
        res["verify_tdnn"] = bench_verify(tdnn, proto_table, proto, by_row, 100 if args.quick else 500, 1 if args.quick else 3)
        res["verify_tdnn"]["model"] = str(args.model or "untrained default configuration")
        res["verify_dtw"] = bench_verify(DTWVerifier(), proto_table, proto, by_row, 20 if args.quick else 100, 1)
        res["ratio_tdnn_over_dtw"] = {
            "latency_speedup": res["verify_dtw"]["latency_ms_p50"] / res["verify_tdnn"]["latency_ms_p50"],
            "s05_throughput": res["verify_tdnn"]["s05_verifications_per_s"] / res["verify_dtw"]["s05_verifications_per_s"],
            "s05_scoring_only": res["verify_tdnn"]["s05_scoring_only_per_s"] / res["verify_dtw"]["s05_scoring_only_per_s"],
        }
        w = sorted(proto.references)[0]
        refs = [str(proto_table.loc[i, "path"]) for i in proto.references[w]]
        query = str(proto_table.loc[int(proto.trials[proto.trials.writer == w]["query"].iloc[0]), "path"])
        res["cli_cold_start"] = bench_cli(model, refs, query, 2 if args.quick else 5)
    res["training"] = bench_training(data, default, args.quick)

    checks = {
        "features_per_s": (res["features"]["bromley_200"]["signatures_per_s"], ">="),
        "parse_files_per_s": (res["parse"]["files_per_s"], ">="),
        "bromley_embed_batched_per_s": (res["embed"]["bromley"]["batched_per_s"], ">="),
        "modern_fraction_of_matmul": (res["embed"]["modern"]["fraction_of_matmul"], ">="),
        "verify_p50_ms": (res["verify_tdnn"]["latency_ms_p50"], "<"),
        "s05_throughput_ratio_vs_dtw": (res["ratio_tdnn_over_dtw"]["s05_throughput"], ">="),
        "cli_cold_start_s": (res["cli_cold_start"]["seconds_p50"], "<"),
    }
    res["targets"] = {k: {"target": TARGETS[k], "measured": v, "met": bool(v >= TARGETS[k] if op == ">=" else v < TARGETS[k])}
                      for k, (v, op) in checks.items()}
    res["seconds"] = time.perf_counter() - t_start
    print_table(res)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0


def print_table(r: dict) -> None:
    f, e, vt, vd = r["features"], r["embed"], r["verify_tdnn"], r["verify_dtw"]
    rows = [
        ("parse (files/s)", f"{r['parse']['files_per_s']:,.0f}"),
        ("features bromley 200 steps (signatures/s)", f"{f['bromley_200']['signatures_per_s']:,.0f}"),
        ("features bromley variable length (signatures/s)", f"{f['bromley_variable']['signatures_per_s']:,.0f}"),
        (f"features default training ({f['default_training']['config']['feature_set']}, "
         f"{f['default_training']['config']['n_steps'] or 'variable'}) (signatures/s)", f"{f['default_training']['signatures_per_s']:,.0f}"),
        ("matrix multiply 1024^2 (GFLOP/s)", f"{r['matmul_gflop_per_s']:.1f}"),
    ]
    for p in ("bromley", "modern"):
        rows += [(f"embed {p}, batch 256 (signatures/s)", f"{e[p]['batched_per_s']:,.0f}"),
                 (f"embed {p}, one at a time (signatures/s)", f"{e[p]['single_per_s']:,.0f}"),
                 (f"embed {p}: GFLOP/s, share of matmul", f"{e[p]['gflop_per_s']:.1f}, {100 * e[p]['fraction_of_matmul']:.0f}%")]
    rows += [
        ("verify one signature, TDNN p50 / p95 (ms)", f"{vt['latency_ms_p50']:.2f} / {vt['latency_ms_p95']:.2f}"),
        ("verify one signature, DTW p50 / p95 (ms)", f"{vd['latency_ms_p50']:.2f} / {vd['latency_ms_p95']:.2f}"),
        (f"S05 run, {vt['s05_trials']} trials, TDNN (verifications/s)", f"{vt['s05_verifications_per_s']:,.0f}"),
        (f"S05 run, {vd['s05_trials']} trials, DTW (verifications/s)", f"{vd['s05_verifications_per_s']:,.0f}"),
        ("S05 scoring only, representations made, TDNN (verifications/s)", f"{vt['s05_scoring_only_per_s']:,.0f}"),
        ("S05 scoring only, representations made, DTW (verifications/s)", f"{vd['s05_scoring_only_per_s']:,.0f}"),
        ("TDNN / DTW: latency, S05 run, S05 scoring only",
         ", ".join(f"{r['ratio_tdnn_over_dtw'][k]:.2g}x" for k in ("latency_speedup", "s05_throughput", "s05_scoring_only"))),
        (f"training pairs/s ({r['training']['writers']} writers, loss {r['training']['loss']}; template: batch_size pairs = one "
         "step of episode_writers episodes)", f"{r['training']['pairs_per_s']:,.0f}"),
        ("training optimisation steps/s", f"{r['training']['steps_per_s']:.1f}"),
        ("training: one epoch incl. validation (s)", f"{r['training']['epoch_s']:.1f}"),
        ("CLI cold start, verify one file (s)", f"{r['cli_cold_start']['seconds_p50']:.2f}"),
    ]
    width = max(len(a) for a, _ in rows)
    print()
    for a, b in rows:
        print(f"{a:<{width}}  {b:>16}")
    print("\ntargets (issue #6):")
    for k, v in r["targets"].items():
        print(f"  {'met ' if v['met'] else 'MISS'} {k}: {v['measured']:,.3g} (target {v['target']:,})")
    print(f"benchmark took {r['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
