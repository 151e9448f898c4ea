"""Train the model of one fold of a cross-validated experiment on its own: screen a setting on some folds.

    python scripts/train_fold.py --data CORPUS --out EXPERIMENT_DIR --fold N [--folds 4] [--seed 0]
                                 [--threads 1] [--set section.key=value ...] [--resume]

Trains ``EXPERIMENT_DIR/foldN/run`` as ``tdnn-siamese experiment --method
tdnn`` would: the same seeded writers' folds, the fold's training writers
written to ``foldN/train/manifest.csv``, the same settings (defaults, then
``--set``; ``--seed`` as experiment's). Several folds can so train at once,
one process (and by default one thread) each, and a later ``tdnn-siamese
experiment --resume --out EXPERIMENT_DIR`` with the same settings reads the
finished runs back, trains only the folds still missing and scores the
test writers. Prints the kept epoch (an ensemble's: each member's) and the
validation skilled EER; reads no test writer. README, "Ablation", (az)
and (ba) were screened so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from tdnn_siamese import datasets
from tdnn_siamese.experiment import initial_model, write_fold_training, writer_splits
from tdnn_siamese.train import RunConfig, apply_sets, summarise_metrics, train


def train_fold(data: str | Path, out: str | Path, fold: int, folds: int, seed: int, sets: list[str], resume: bool = False) -> Path:
    """Train fold ``fold`` of ``folds`` (1-based) into ``out/foldN/run``; the model file's path."""
    if not 1 <= fold <= folds:  # before the corpus is read
        raise ValueError(f"--fold must be between 1 and --folds ({folds}), got {fold}")
    cfg = RunConfig.from_sections(apply_sets({}, [f"train.seed={seed}", *sets]))
    table = datasets.load(data)
    splits = writer_splits(datasets.writers(table), folds, seed)
    initial_model(cfg, table)  # as experiment: a train.init model trained on this corpus is refused
    train_w, _ = splits[fold - 1]
    fold_dir = Path(out) / f"fold{fold}"
    manifest = write_fold_training(table, train_w, fold_dir)
    return train(manifest.parent, fold_dir / "run", cfg, resume=resume)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="corpus: SVC2004 folder, folder with manifest.csv, or the manifest")
    ap.add_argument("--out", required=True, help="the experiment folder (foldN/run is written in it)")
    ap.add_argument("--fold", type=int, required=True, help="which fold's model to train (1-based)")
    ap.add_argument("--folds", type=int, default=4, help="number of writer-disjoint folds (default: 4, as experiment)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the folds and of training (default: 0, as experiment)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, so that folds can train side by side)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run of this fold")
    args = ap.parse_args(argv)
    if args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        model = train_fold(args.data, args.out, args.fold, args.folds, args.seed, args.set, args.resume)
    except (ValueError, OSError) as e:  # the toolkit's input, config and checkpoint errors are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"fold {args.fold}: {summarise_metrics(pd.read_csv(model.parent / 'metrics.csv'))}; model: {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
