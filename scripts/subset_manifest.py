"""Write a manifest.csv listing a subset of a corpus's writers (absolute paths).

Usage: python scripts/subset_manifest.py --data CORPUS --writers U1-U30 --out DIR/manifest.csv

Writers are given as names and ranges of names that share a prefix
(``U1-U30``, ``U1,U5,U9``, ``synth0001-synth0008``). The files stay where
they are; only the manifest is written (outside the repository for research
corpora). Used to train on SVC2004 writers 1-30, for example.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tdnn_siamese import datasets  # noqa: E402


def expand(spec: str) -> set[str]:
    out: set[str] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"([^\d,]*)(\d+)-\1?(\d+)", part.strip())
        if m:
            prefix, a, b = m.group(1), int(m.group(2)), int(m.group(3))
            width = len(m.group(2)) if m.group(2).startswith("0") else 0
            out |= {f"{prefix}{i:0{width}d}" for i in range(a, b + 1)}
        elif part.strip():
            out.add(part.strip())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--writers", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    table = datasets.load(args.data)
    wanted = expand(args.writers)
    missing = wanted - set(table["writer"])
    if missing:
        print(f"error: writers not in {args.data}: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    sub = table[table["writer"].isin(wanted)]
    datasets.write_manifest(sub.to_dict("records"), args.out)
    print(f"{args.out}: {len(sub)} files of {sub['writer'].nunique()} writers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
