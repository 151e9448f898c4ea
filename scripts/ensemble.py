"""Would an ensemble of fold models beat one? Judged on validation first (README, "Ablation", (xx)).

    python scripts/ensemble.py EXPERIMENT_DIR [EXPERIMENT_DIR ...] [--out FILE.json]

Each folder is a finished ``tdnn-siamese experiment --method tdnn`` run of
the same folds whose models differ only in ``train.member`` (the same
writers' split and validation draws, other initial weights and episodes).
For every fold the members score the fold's validation writers (inside
the training folds: no test writer is read) exactly as training
validated them (the run's ``val_draws`` draws of ``val_k`` references,
each member with its own chosen strategy), and the ensemble's score of a
trial is the mean of its members' raw scores: no weight or scale is
fitted, so the ensemble's validation EER is as honest as one model's.
Its figure, the mean over draws of the skilled EER, is reported beside
each member's (which must equal the member's kept validation EER in its
``metrics.csv``: the script checks it).

Then, for information (they choose nothing), the test writers' figures of
each protocol the runs scored (``S05/scores.csv``, ...): the writer-specific
skilled and random EERs of the mean raw score, and the global ones pooled
over folds of the mean calibrated log-odds (each member's own calibration
on its validation writers, as ``experiment`` pools a single model), with
the mean within folds beside them. The figures are printed and written to
``--out`` (JSON, atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tdnn_siamese.atomic import atomic_write_json
from tdnn_siamese.distances import Distance
from tdnn_siamese.experiment import fold_runs
from tdnn_siamese.metrics import eer, per_writer_eer
from tdnn_siamese.model import CheckpointError, embed_all, load_checkpoint
from tdnn_siamese.protocols import fitting_k, sk_protocols
from tdnn_siamese.train import RunConfig, draw_scores, prepare

KINDS = ("genuine", "skilled", "random")


def _same_but_member(runs: list[Path], cfgs: list[RunConfig]) -> None:
    """Members must differ in ``train.member`` alone (and each member once)."""
    base = {**cfgs[0].to_dict(), "train": {**cfgs[0].train.to_dict(), "member": None}}
    for run, cfg in zip(runs[1:], cfgs[1:]):
        mine = {**cfg.to_dict(), "train": {**cfg.train.to_dict(), "member": None}}
        if mine != base:
            diff = [f"{s}.{k}" for s in base for k in base[s] if base[s][k] != mine[s].get(k)]
            raise ValueError(f"{run} was trained with other settings than {runs[0]} ({', '.join(diff)}): not members of one ensemble")
    members = [c.train.member for c in cfgs]
    if len(set(members)) != len(members):
        raise ValueError(f"{', '.join(map(str, runs))}: train.member repeats ({members}); an ensemble needs distinct members")


def fold_validation(runs: list[Path]) -> dict:
    """One fold's validation skilled EER (mean over draws) of each member and of the mean of their raw scores."""
    cfgs = [RunConfig.read(r / "config.json") for r in runs]
    _same_but_member(runs, cfgs)
    cfg = cfgs[0]
    prep = prepare(runs[0].parent / "train", cfg)
    table = prep.table.iloc[prep.val_rows].reset_index(drop=True)
    k = fitting_k(table, cfg.train.val_k)
    protos = sk_protocols(table, k, cfg.train.val_draws, cfg.train.seed, cfg.train.val_draw_pool)
    dist = Distance.for_encoder(cfg.train.distance, cfg.model.frame_dim, cfg.model.members)
    per_member, strategies = [], []
    for run in runs:
        ck = load_checkpoint(run / "model.pt")
        emb = embed_all(ck.encoder, [prep.seqs[i] for i in prep.val_rows])
        per_member.append([d[ck.scoring] for d in draw_scores(emb, protos, dist, [ck.scoring], ck.offset_weight)])
        strategies.append(ck.scoring)

    def mean_eer(draws: list[dict[str, list[float]]]) -> float:
        if not all(d["skilled"] for d in draws):
            raise ValueError(f"{runs[0].parent}: the validation writers have no skilled forgeries")
        return float(np.mean([eer(d["genuine"], d["skilled"])[0] for d in draws]))

    members = [mean_eer(m) for m in per_member]
    for run, figure in zip(runs, members):  # the same scoring as training's validation: the kept epoch's figure
        metrics = pd.read_csv(run / "metrics.csv")
        kept = metrics.loc[metrics["best"].astype(bool), "val_eer_skilled"]
        if len(kept) and abs(float(kept.iloc[-1]) - figure) > 1e-6:
            raise ValueError(f"{run}: validation rescored to {100 * figure:.3f}% but metrics.csv kept {100 * float(kept.iloc[-1]):.3f}%")
    return {"members": members, "strategies": strategies, "ensemble": mean_eer(mean_scores(per_member)), "draws": len(protos)}


def mean_scores(per_member: list[list[dict[str, list[float]]]]) -> list[dict[str, list[float]]]:
    """The ensemble's scores, ``[draw][kind]``: trial by trial the mean of the members' (``[member][draw][kind]``)."""
    shapes = {tuple(tuple(len(d[kind]) for kind in KINDS) for d in m) for m in per_member}
    if len(shapes) != 1:
        raise ValueError("the members scored different trials: not one ensemble")
    return [{kind: np.mean([m[d][kind] for m in per_member], axis=0).tolist() for kind in KINDS} for d in range(len(per_member[0]))]


def test_figures(experiments: list[Path], protocol: str) -> dict | None:
    """The test writers' EERs of the members' mean score, from each run's ``PROTOCOL/scores.csv`` (None if absent)."""
    paths = [e / protocol / "scores.csv" for e in experiments]
    if not all(p.exists() for p in paths):
        return None
    frames = [pd.read_csv(p, dtype={"writer": str}) for p in paths]
    key = ["fold", "writer", "query", "kind"]
    for p, f in zip(paths[1:], frames[1:]):
        if len(f) != len(frames[0]) or not f[key].equals(frames[0][key]):
            raise ValueError(f"{p} holds other trials than {paths[0]}: not the same folds and protocol")
    s = frames[0][key].copy()
    s["raw"] = np.mean([f["raw_score"].to_numpy() for f in frames], axis=0)
    s["log_odds"] = np.mean([f["score"].to_numpy() for f in frames], axis=0)
    out = {}
    for impostor in ("skilled", "random"):
        t = s[s["kind"].isin(["genuine", impostor])]
        genuine = (t["kind"] == "genuine").to_numpy()
        if genuine.all() or not genuine.any():  # e.g. S10 of writers with 10 genuine signatures: no genuine query
            continue
        ws = per_writer_eer(t["writer"].to_numpy(), genuine, t["raw"].to_numpy())
        pooled = eer(t.loc[genuine, "log_odds"], t.loc[~genuine, "log_odds"])[0]
        within = np.mean([eer(d.loc[d["kind"] == "genuine", "raw"], d.loc[d["kind"] == impostor, "raw"])[0] for _, d in t.groupby("fold")])
        out[impostor] = {"writer_specific": float(np.mean(list(ws.values()))), "global_pooled": float(pooled),
                         "global_within_folds": float(within)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiments", nargs="+", help="experiment folders of the same folds, one per member")
    ap.add_argument("--protocols", default="S05,S10", help="test figures of these protocols, where scored (default S05,S10)")
    ap.add_argument("--out", help="write the figures here (JSON)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    try:
        if len(args.experiments) < 2:
            raise ValueError("an ensemble needs at least two experiment folders")
        exps = [Path(e) for e in args.experiments]
        runs = [fold_runs(e) for e in exps]
        names = [[r.parent.name for r in rs] for rs in runs]
        if any(n != names[0] for n in names):
            raise ValueError(f"the folders hold other folds: {', '.join(' '.join(n) for n in names)}")
        out: dict = {"experiments": [str(e) for e in exps], "validation": {}, "test": {}}
        for fold_members in zip(*runs):
            f = out["validation"][fold_members[0].parent.name] = fold_validation(list(fold_members))
            print(f"{fold_members[0].parent.name}: validation skilled EER, members "
                  f"{', '.join(f'{100 * m:.2f}' for m in f['members'])} ({', '.join(f['strategies'])}); "
                  f"ensemble {100 * f['ensemble']:.2f}", flush=True)
        v = out["validation"].values()
        out["validation_mean"] = {"members": [float(np.mean(m)) for m in zip(*(f["members"] for f in v))],
                                  "ensemble": float(np.mean([f["ensemble"] for f in v]))}
        print("mean over folds: members " + ", ".join(f"{100 * m:.2f}" for m in out["validation_mean"]["members"])
              + f"; ensemble {100 * out['validation_mean']['ensemble']:.2f}")
        for protocol in filter(None, args.protocols.split(",")):
            t = test_figures(exps, protocol)
            if t is None:
                print(f"{protocol}: not scored by every folder; no test figures")
                continue
            out["test"][protocol] = t
            if not t:
                print(f"{protocol}: no trials with both genuine and impostor queries; no test figures")
                continue
            print(f"{protocol} test (information only), ensemble: " + "; ".join(
                f"{imp} writer-specific {100 * x['writer_specific']:.2f}, global {100 * x['global_pooled']:.2f} pooled "
                f"({100 * x['global_within_folds']:.2f} within folds)" for imp, x in t.items()))
    except (ValueError, OSError, KeyError, CheckpointError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        atomic_write_json(args.out, out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
