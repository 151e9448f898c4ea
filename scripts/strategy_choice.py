"""How well a rule for choosing the scoring strategy holds on validation writers it did not choose on
(README, "Ablation", (oo)).

    python scripts/strategy_choice.py EXPERIMENT_DIR [EXPERIMENT_DIR ...] [--out FILE.json]

For every ``foldN/run`` of each ``tdnn-siamese experiment`` folder (``--method
tdnn`` or ``fusion``), the fold model scores its validation writers (inside
the training folds: no test writer is read) as training's validation does:
``train.val_k`` references, ``train.val_draws`` draws from
``train.val_draw_pool`` seeded with ``train.seed``, every strategy the
model's distance can use. Then, for every split of its W validation writers
into a half of W // 2 and the rest, each rule chooses a strategy by the
skilled-forgery EER (one threshold over the half's writers, mean over draws;
ties broken as training's validation breaks them: random-forgery EER, then
separation, then the order of ``STRATEGIES``) on one half, and the skilled
EER of that choice on the other half is the rule's held-out figure. Rules:

- ``all``: the lowest EER among every usable strategy (validation's rule
  before ``train.val_strategies``);
- ``offsets``: among ``mean_offset`` and ``nearest_offset`` (the default since);
- ``no_wnorm``: among all but ``wnorm``;
- ``only_S``: strategy S, whatever the half says.

The kept epoch of each model was chosen by its run's own rule on all its
validation writers, which favours that rule's choices a little. Prints each
model's full-validation EER per strategy and held-out figure per rule, then
the mean over models; ``--out`` gets them as JSON (atomically).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

from tdnn_siamese.atomic import atomic_write_json
from tdnn_siamese.distances import Distance
from tdnn_siamese.experiment import fold_runs
from tdnn_siamese.model import CheckpointError, embed_all, load_checkpoint
from tdnn_siamese.protocols import Protocol, fitting_k, sk_protocols
from tdnn_siamese.train import RunConfig, draw_scores, prepare, strategy_validation
from tdnn_siamese.verifier import MIN_REFERENCES, usable_strategies

OFFSETS = ("mean_offset", "nearest_offset")
KINDS = ("genuine", "skilled", "random")


def rules(strategies: list[str]) -> dict[str, list[str]]:
    """Each rule's candidate strategies, among the ``strategies`` usable here."""
    out = {"all": strategies, "offsets": [s for s in OFFSETS if s in strategies],
           "no_wnorm": [s for s in strategies if s != "wnorm"]}
    out.update({f"only_{s}": [s] for s in strategies})
    return {r: c for r, c in out.items() if c}


def model_figures(run: Path) -> dict:
    """Full-validation EER per strategy and held-out EER per rule of one fold model (see the module docstring)."""
    cfg = RunConfig.read(run / "config.json")
    ck = load_checkpoint(run / "model.pt")
    prep = prepare(run.parent / "train", cfg)
    table = prep.table.iloc[prep.val_rows].reset_index(drop=True)
    emb = embed_all(ck.encoder, [prep.seqs[i] for i in prep.val_rows])
    dist = Distance.for_encoder(cfg.train.distance, cfg.model.frame_dim, cfg.model.members)
    k = fitting_k(table, cfg.train.val_k)
    strategies = [s for s in usable_strategies(dist.kind) if MIN_REFERENCES[s] <= k]
    protos = sk_protocols(table, k, cfg.train.val_draws, cfg.train.seed, cfg.train.val_draw_pool)
    writers = sorted(protos[0].references)
    if len(writers) < 2:
        raise ValueError(f"{run}: {len(writers)} validation writer(s); halves need at least 2")

    by_writer = {}  # writer -> [draw][strategy][kind] -> scores, computed once
    for w in writers:
        sub = [Protocol(p.k, {w: p.references[w]}, p.trials[p.trials.writer == w].reset_index(drop=True), p.draw) for p in protos]
        by_writer[w] = draw_scores(emb, sub, dist, strategies, ck.offset_weight)
        if not by_writer[w][0][strategies[0]]["skilled"]:
            raise ValueError(f"{run}: validation writer {w} has no skilled forgeries")

    def validation(ws: list[str]) -> dict[str, tuple[float, float, float]]:
        """Per strategy, training's validation key on writers ws: skilled EER (one threshold over ws, mean over draws),
        then random EER, then minus the d' of genuine and skilled scores pooled over draws (Validation.key)."""
        return {s: strategy_validation([{kind: sum((by_writer[w][d][s][kind] for w in ws), []) for kind in KINDS}
                                        for d in range(len(protos))], s, {}).key for s in strategies}

    candidates = rules(strategies)
    splits = []
    for half in itertools.combinations(writers, len(writers) // 2):
        rest = [w for w in writers if w not in half]
        chose_on, judged_on = validation(list(half)), validation(rest)
        choices = {r: min(cand, key=lambda s: (chose_on[s], strategies.index(s))) for r, cand in candidates.items()}
        splits.append({"chose_on": list(half), "judged_on": rest, "choices": choices,
                       "held_out": {r: judged_on[c][0] for r, c in choices.items()}})
    return {"strategy": ck.scoring, "validation_writers": len(writers), "splits": splits,
            "full": {s: v[0] for s, v in validation(writers).items()},
            "held_out": {r: float(np.mean([x["held_out"][r] for x in splits])) for r in candidates}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiments", nargs="+", help="experiment folders (fold1/run, fold2/run, ...)")
    ap.add_argument("--out", help="write the figures here (JSON)")
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    out: dict = {"models": {}}
    try:
        for exp in args.experiments:
            for run in fold_runs(exp):
                f = out["models"][str(run)] = model_figures(run)
                print(f"{run} ({f['strategy']}, {f['validation_writers']} writers): validation "
                      + " ".join(f"{s} {100 * v:.2f}" for s, v in f["full"].items()) + " | held out "
                      + " ".join(f"{r} {100 * v:.2f}" for r, v in f["held_out"].items()), flush=True)
    except (ValueError, OSError, CheckpointError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    common = set.intersection(*(set(m["held_out"]) for m in out["models"].values()))
    out["mean_held_out"] = {r: float(np.mean([m["held_out"][r] for m in out["models"].values()]))
                            for r in next(iter(out["models"].values()))["held_out"] if r in common}
    print(f"mean over {len(out['models'])} models, held out: "
          + " ".join(f"{r} {100 * v:.2f}" for r, v in out["mean_held_out"].items()))
    if args.out:
        atomic_write_json(args.out, out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
