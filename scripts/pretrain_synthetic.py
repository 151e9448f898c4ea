"""Build the shipped pre-trained model, ``data/pretrained/synthetic.pt``: the defaults trained on synthetic writers.

    python scripts/pretrain_synthetic.py [--work DIR] [--install]

1. ``tdnn-siamese synth``: 600 sigma-lognormal writers x (20 genuine + 20
   skilled forgeries), seed 7 (:mod:`tdnn_siamese.synth`; about 2 minutes);
2. ``tdnn-siamese train`` on them with today's defaults (random initial
   weights, ``train.init = ""``), at most 15 epochs, patience 4: about 16
   minutes with one thread on 2 cores. Validation is on 120 of the
   synthetic writers; no real signature is read.

``--install`` then copies the kept model to ``data/pretrained/synthetic.pt``
(atomically), the file that ``train.init = "synthetic"`` starts a run from
when the run's architecture and features are the defaults
(README, "Training" and "Ablation"). One thread by default, so the same
machine and torch version rebuild the same weights; the script prints the
model's fingerprint (:func:`fingerprint`) to compare with the one in ``data/README.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from tdnn_siamese.atomic import atomic_write_bytes
from tdnn_siamese.cli import Progress
from tdnn_siamese.config import ConfigError
from tdnn_siamese.model import load_checkpoint
from tdnn_siamese.verifier import model_fingerprint
from tdnn_siamese.synth import synthesize
from tdnn_siamese.train import PRETRAINED, RunConfig, apply_sets, architecture_difference, train

# on top of the defaults (and --epochs); augment 0, val_strategies [] (validation choosing among every strategy) and
# keep_initial true (epoch 0 a candidate): how the shipped file was built, before each became the default
SETTINGS = ["train.init=", "train.patience=4", "train.augment=0", "train.val_strategies=[]", "train.keep_initial=true",
            "model.members=1"]


def fingerprint(path: str | Path) -> str:
    """The model's fingerprint (:func:`tdnn_siamese.verifier.model_fingerprint`: architecture, weights, features,
    distance): equal for two builds of the same weights, whose files differ in provenance (paths, times)."""
    ck = load_checkpoint(path)
    return model_fingerprint(ck.encoder, ck.feature_config, ck.distance)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="runs/pretrain-synthetic", help="folder for the synthetic corpus and the run")
    ap.add_argument("--writers", type=int, default=600)
    ap.add_argument("--seed", type=int, default=7, help="seed of the synthetic corpus")
    ap.add_argument("--epochs", type=int, default=15, help="most epochs (15: the shipped file's)")
    ap.add_argument("--genuine", type=int, default=20, help="genuine signatures (and as many skilled forgeries) per writer")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="a further setting (as train's --set)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the shipped file's)")
    ap.add_argument("--install", action="store_true", help=f"copy the kept model to {PRETRAINED}")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # as the CLI
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    corpus, run = work / "synth", work / "run"
    try:
        cfg = RunConfig.from_sections(apply_sets({}, SETTINGS + [f"train.epochs={args.epochs}"] + args.set))
        if args.install and (why := _unfit_for_defaults(cfg)) is not None:
            raise ConfigError(f"--install: a model trained with these settings would not fit today's defaults ({why}), "
                              "so no default run could start from it")
        if (corpus / "manifest.csv").is_file():
            print(f"reusing the synthetic corpus in {corpus} (remove it to make another)")
        else:
            synthesize(corpus, args.writers, args.genuine, args.genuine, args.seed)
        model = train(corpus, run, cfg, resume=(run / "train_state.pt").exists(), progress=Progress())
    except (ValueError, OSError) as e:  # ConfigError, InputError and the format errors are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    data = model.read_bytes()
    print(f"kept model: {model} ({len(data) / 1e6:.2f} MB), fingerprint {fingerprint(model)}")
    if args.install:
        PRETRAINED.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(PRETRAINED, data)
        print(f"installed: {PRETRAINED}")
    return 0


def _unfit_for_defaults(cfg: RunConfig) -> str | None:
    """Where a model trained with ``cfg`` would differ from what a default run trains (architecture, features)."""
    d = architecture_difference(cfg.model.to_dict(), cfg.features.to_dict(), RunConfig.from_sections({}))
    return None if d is None else f"{d[0]} = {d[1]!r}, the defaults' {d[2]!r}"


if __name__ == "__main__":
    sys.exit(main())
