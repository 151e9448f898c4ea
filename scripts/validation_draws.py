"""How much a fold model's validation EER depends on which references are drawn (README, "Ablation", (y)-(aa)).

    python scripts/validation_draws.py EXPERIMENT_DIR [--draws 100] [--group 10] [--out FILE.json]

For every ``foldN/run`` of a ``tdnn-siamese experiment`` folder (``--method
tdnn`` or ``fusion``), the fold model (its kept weights and its own scoring strategy)
scores its validation writers (inside the training folds: no test writer
is read) with the S_k protocol of its run, k = ``train.val_k``:

- once with each writer's first k genuine signatures as references (what
  validation did before ``train.val_draws``), and
- ``--draws`` times with seeded random draws of them, from where the run
  drew its validation references (``train.val_draw_pool``: the sessions of
  the first k, or all genuines for runs saved before that setting),

and reports the skilled-forgery EER of the first-k protocol, the mean and
standard deviation of the single draws' EERs, and the standard deviation
of means of ``--group`` draws (disjoint groups of the same draws: what
``train.val_draws = group`` leaves of that noise); standard deviations
are of the population (ddof 0). The figures are printed
and written to ``--out`` (JSON, atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from tdnn_siamese.atomic import atomic_write_json
from tdnn_siamese.distances import Distance
from tdnn_siamese.experiment import fold_runs
from tdnn_siamese.metrics import eer
from tdnn_siamese.model import CheckpointError, embed_all, load_checkpoint
from tdnn_siamese.protocols import Protocol, fitting_k, sk_protocol, sk_protocols
from tdnn_siamese.train import RunConfig, draw_scores, prepare

SEED = 999  # the draws' seed: other draws than any training run's validation (whose seed is train.seed)


def fold_figures(run: Path, draws: int, group: int) -> dict:
    """The validation skilled EERs of one fold model over reference draws (see the module docstring)."""
    cfg = RunConfig.read(run / "config.json")
    ck = load_checkpoint(run / "model.pt")
    prep = prepare(run.parent / "train", cfg)
    table = prep.table.iloc[prep.val_rows].reset_index(drop=True)
    emb = embed_all(ck.encoder, [prep.seqs[i] for i in prep.val_rows])
    dist = Distance.for_encoder(cfg.train.distance, cfg.model.frame_dim, cfg.model.members)
    k = fitting_k(table, cfg.train.val_k)

    def skilled_eers(protos: list[Protocol]) -> np.ndarray:  # training's own validation scoring, one strategy
        out = []
        for d in draw_scores(emb, protos, dist, [ck.scoring], ck.offset_weight):
            if not d[ck.scoring]["skilled"]:
                raise ValueError(f"{run}: the validation writers have no skilled forgeries")
            out.append(eer(d[ck.scoring]["genuine"], d[ck.scoring]["skilled"])[0])
        return np.array(out)

    single = skilled_eers(sk_protocols(table, k, draws, SEED, cfg.train.val_draw_pool))  # drawn as the run validated
    means = single[: draws // group * group].reshape(-1, group).mean(axis=1)
    return {"strategy": ck.scoring, "k": k, "validation_writers": len(sk_protocol(table, k, warn=False).references),
            "first_k": float(skilled_eers([sk_protocol(table, k)])[0]), "draws": draws, "draw_mean": float(single.mean()),
            "draw_sd": float(single.std()), "draw_min": float(single.min()), "draw_max": float(single.max()),
            "group": group, "groups": len(means), "group_mean_sd": float(means.std()) if len(means) > 1 else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", help="an experiment folder (fold1/run, fold2/run, ...)")
    ap.add_argument("--draws", type=int, default=100, help="random draws of the references per fold (default 100)")
    ap.add_argument("--group", type=int, default=10, help="draws averaged per group (default 10, train.val_draws' default)")
    ap.add_argument("--out", help="write the figures here (JSON)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    try:
        if args.draws < 2 or not 1 <= args.group <= args.draws:
            raise ValueError("--draws must be at least 2 and --group between 1 and --draws")
        runs = fold_runs(args.experiment)
        out = {}
        for run in runs:
            f = out[run.parent.name] = fold_figures(run, args.draws, args.group)
            sd = "" if f["group_mean_sd"] is None else f"; means of {args.group} draws: sd {100 * f['group_mean_sd']:.2f}"
            print(f"{run.parent.name} ({f['strategy']}, {f['validation_writers']} writers): first {f['k']} references "
                  f"{100 * f['first_k']:.2f}%; one random draw: mean {100 * f['draw_mean']:.2f}%, sd {100 * f['draw_sd']:.2f} "
                  f"(from {100 * f['draw_min']:.1f} to {100 * f['draw_max']:.1f}){sd}", flush=True)
    except (ValueError, OSError, CheckpointError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        atomic_write_json(args.out, out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
