"""Why per-signature z-normalisation: the DTW baseline with and without it, S05 on a corpus.

    python scripts/dtw_normalisation.py [--data ../shared/datasets/svc2004-task2/Task2] [--out FILE.csv]

Scores every writer's S05 trials (first 5 genuine signatures as references,
the rest and the skilled forgeries as queries) with the baseline's DTW
(``dtw.dtw_distance``, mean over the references) on its ``kinematic``
features, normalised two ways:

- ``signature``: every channel z-normalised over each signature's own steps
  (``FeatureConfig.znorm``, what the baseline does);
- ``global``: one standardisation of every channel, its mean and standard
  deviation taken over all signatures of the corpus (what the TDNN saw
  before ``znorm``: statistics of its training data).

No training and no threshold is fitted, so there is nothing to keep apart:
the figures are the skilled-forgery EERs, writer-specific (mean of the
writers' own) and global (one threshold). Prints both with the worst
writers; ``--out`` writes each writer's EER under both (CSV). Without the
corpus it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tdnn_siamese import datasets
from tdnn_siamese.atomic import atomic_write_text
from tdnn_siamese.dtw import DTWConfig, dtw_distance
from tdnn_siamese.features import extract_many
from tdnn_siamese.metrics import eer, per_writer_eer
from tdnn_siamese.protocols import fitting_k, sk_protocol


def normalised(feats: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The two normalisations of the plain features (see the module docstring)."""
    signature = [(f - f.mean(0)) / np.where(f.std(0) > 1e-9, f.std(0), 1.0) for f in feats]
    allf = np.concatenate(feats)
    mu, sd = allf.mean(0), allf.std(0)
    return {"signature": signature, "global": [(f - mu) / sd for f in feats]}


def skilled_scores(table: pd.DataFrame, feats: list[np.ndarray], window: float) -> pd.DataFrame:
    """One row per S05 genuine or skilled trial: writer, genuine (bool), score (minus the mean DTW cost)."""
    proto = sk_protocol(table, fitting_k(table, 5))
    rows = []
    for w, refs in proto.references.items():
        t = proto.trials[(proto.trials.writer == w) & (proto.trials.kind != "random")]
        for q, kind in zip(t["query"], t["kind"]):
            rows.append((w, kind == "genuine", -float(np.mean([dtw_distance(feats[q], feats[r], window) for r in refs]))))
    return pd.DataFrame(rows, columns=["writer", "genuine", "score"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/svc2004-task2/Task2", help="corpus (folder or manifest.csv)")
    ap.add_argument("--out", help="write each writer's skilled EER under both normalisations here (CSV)")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"note: {args.data} not found; nothing to measure", file=sys.stderr)
        return 0
    cfg = DTWConfig()
    table = datasets.load(args.data)
    plain = [f.astype(np.float64) for f in extract_many(datasets.load_signatures(table), cfg.features.replace(znorm=False))]
    per_writer = {}
    for name, feats in normalised(plain).items():
        d = skilled_scores(table, feats, cfg.window)
        pw = per_writer_eer(d.writer, d.genuine, d.score)
        per_writer[name] = pw
        worst = ", ".join(f"{w} {100 * e:.1f}%" for w, e in sorted(pw.items(), key=lambda x: -x[1])[:5])
        glob = eer(d.score[d.genuine].tolist(), d.score[~d.genuine].tolist())[0]
        print(f"{name:9s} skilled EER writer-specific {100 * np.mean(list(pw.values())):.2f}%  global {100 * glob:.2f}%  "
              f"worst: {worst}", flush=True)
    if args.out:
        atomic_write_text(args.out, pd.DataFrame(per_writer).rename_axis("writer").to_csv())
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
