"""How close are the synthetic signers to a real corpus? Distributions side by side.

    python scripts/synth_realism.py [--data ../shared/datasets/svc2004-task2/Task2] [--writers 100] [--seed 3] [--out FILE.csv]

For the genuine signatures and the skilled forgeries of the real corpus and
of a freshly synthesised one (``synth.synthesize``), prints the 10th, 50th
and 90th percentiles of: duration (s), pen-down components, median and
90th-percentile pen speed in bounding-box diagonals per second, ink length
over the diagonal, sign changes of the vertical velocity (a count of up and
down strokes) and the width/height aspect ratio; then the forgery/genuine
ratios of the median duration and speed. Writes the table as CSV with
``--out``. Without the real corpus it says so and shows the synthetic one
alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tdnn_siamese import datasets, synth

MEASURES = ("duration_s", "pen_down_components", "median_speed", "p90_speed", "ink_over_diagonal", "vertical_strokes", "aspect")


def measures(sig) -> tuple[float, ...]:
    """The MEASURES of one signature."""
    t = (sig.t - sig.t[0]) / 1000.0
    down = sig.pen_down.astype(bool)
    components = int(np.sum(np.diff(np.concatenate([[0], down.astype(int)])) == 1))
    x, y = sig.x[down], sig.y[down]
    diag = max(float(np.hypot(np.ptp(x), np.ptp(y))), 1e-9)
    both = down[1:] & down[:-1]
    step = np.hypot(np.diff(sig.x), np.diff(sig.y))[both]
    speed = step / np.maximum(np.diff(t)[both], 1e-3) / diag
    vy = np.diff(sig.y)[both]
    vy = vy[np.abs(vy) > 0]
    return (float(t[-1]), components, float(np.median(speed)), float(np.percentile(speed, 90)), float(step.sum() / diag),
            int(np.sum(np.diff(np.sign(vy)) != 0)), float(np.ptp(x) / max(np.ptp(y), 1e-9)))


def corpus_table(path: str | Path, name: str) -> pd.DataFrame:
    """One row per genuine or skilled signature of a corpus: its measures."""
    table = datasets.load(path)
    table = table[table.label.isin(["genuine", "skilled"])]
    sigs = [(r["label"], datasets.read_row(r)) for r in table.to_dict("records")]
    rows = [(name, label, *measures(sig)) for label, sig in sigs if int(sig.pen_down.sum()) >= 3]  # needs some ink to measure
    return pd.DataFrame(rows, columns=["corpus", "label", *MEASURES])


def summary(df: pd.DataFrame) -> pd.DataFrame:
    q = df.groupby(["corpus", "label"])[list(MEASURES)].quantile([0.1, 0.5, 0.9]).unstack()
    q.columns = [f"{m} p{int(p * 100)}" for m, p in q.columns]
    return q


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/svc2004-task2/Task2", help="real corpus (folder or manifest.csv)")
    ap.add_argument("--writers", type=int, default=100, help="synthetic writers to make (20 genuine, 20 skilled each)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", help="write the percentile table here (CSV)")
    args = ap.parse_args(argv)
    parts = []
    if Path(args.data).exists():
        parts.append(corpus_table(args.data, "real"))
    else:
        print(f"note: {args.data} not found; showing the synthetic corpus alone", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        synth.synthesize(tmp, args.writers, 20, 20, seed=args.seed)
        parts.append(corpus_table(tmp, "synthetic"))
    df = pd.concat(parts, ignore_index=True)
    table = summary(df)
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        for m in MEASURES:
            print(table[[f"{m} p10", f"{m} p50", f"{m} p90"]].round(2).to_string(), "\n")
    med = df.groupby(["corpus", "label"])[["duration_s", "median_speed"]].median()
    for corpus in med.index.get_level_values(0).unique():
        g, k = med.loc[(corpus, "genuine")], med.loc[(corpus, "skilled")]
        print(f"{corpus}: forgery/genuine median duration {k.duration_s / g.duration_s:.2f}, median speed {k.median_speed / g.median_speed:.2f}")
    if args.out:
        table.round(4).to_csv(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
