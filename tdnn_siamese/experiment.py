"""Writer-disjoint cross-validated experiments: train on k-1 folds, test on the held-out one.

Run: ``tdnn-siamese experiment --data D --folds 4 --protocol S05 --method tdnn|dtw --out DIR``.

The corpus's writers are dealt into ``folds`` seeded folds. For each fold,
with ``method="tdnn"``, a model is trained (:func:`tdnn_siamese.train.train`)
on the writers of the other folds only, its validation writers drawn from
those same folds; early stopping, the scoring strategy and the threshold
are all chosen on them. The held-out fold's writers are then scored with
the S_k protocol (random forgeries from the same fold) by the fold's model.
Nothing about the test writers reaches training, model selection or
calibration. With ``method="dtw"`` there is nothing to train and each fold
is just scored. The folds' score tables are pooled (columns ``fold`` and,
for the TDNN, the ``threshold`` each fold's model calibrated) into one
report (:mod:`tdnn_siamese.evaluate`). ``DIR`` gets::

    fold1/train/manifest.csv   the fold's training writers (absolute paths)
    fold1/run/                 model.pt, metrics.csv, ... (tdnn)
    fold1/scores-S05.csv       the held-out fold's scores, per protocol (tdnn: calibrated log-odds,
                               raw scores in raw_score; see tdnn_siamese.calibration)
    fold1/fusion-S05.csv       (fusion) the fused scores; fold1/fusion-S05.json the fitted weights
    scores.csv report.json report.md far_frr.png det.png    (one protocol)
    S05/..., S10/...                                        (several: --protocol S05,S10)

An interrupted experiment continues with ``resume=True``: finished folds
are read back, an unfinished training resumes from its last epoch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from . import datasets
from .atomic import atomic_write_json, atomic_write_text
from .dtw import DTWConfig, DTWVerifier
from .evaluate import EvaluationError, fold_means, report, score_protocols
from .protocols import ProtocolError, draws_text, fitting_k, sk_protocols

if TYPE_CHECKING:
    from .train import RunConfig

logger = logging.getLogger(__name__)

METHODS = ("tdnn", "dtw", "fusion")


def run_experiment(data: str | Path, out: str | Path, *, method: str, folds: int, ks: Sequence[int], draws: int = 1, seed: int = 0,
                   run_config=None, dtw_config: DTWConfig = DTWConfig(), resume: bool = False,
                   progress: Callable[..., None] | None = None) -> dict[int, tuple[pd.DataFrame, dict[str, Any]]]:
    """Run every fold; for each S_k protocol in ``ks`` the pooled score table and its report (written by the caller).

    Each fold's model is trained once and scored with every protocol.
    """
    from .train import RunConfig, file_sha256, train
    from .verifier import Verifier, VerifierError

    if method not in METHODS:
        raise ProtocolError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    out = Path(out)
    table = datasets.load(data)
    names = datasets.writers(table)
    splits = writer_splits(names, folds, seed)
    run_config = run_config or RunConfig.from_sections({})
    init = initial_model(run_config, table) if method != "dtw" else ""
    init_sha256 = file_sha256(init) if init else ""
    parts: dict[int, list[pd.DataFrame]] = {k: [] for k in ks}
    for f, (train_w, test_w) in enumerate(splits, start=1):
        fold_dir = out / f"fold{f}"
        done = {k: fold_dir / (f"fusion-S{k:02d}.csv" if method == "fusion" else f"scores-S{k:02d}.csv") for k in ks}
        if progress:
            progress("fold", f, folds, len(train_w), len(test_w))
        if resume and method != "dtw":
            _check_fold_init(fold_dir, init_sha256)
        if resume and all(p.is_file() for p in done.values()):
            if method != "dtw":
                _check_finished_fold(fold_dir, run_config)
            for k in ks:
                parts[k].append(pd.read_csv(done[k], dtype={"writer": str}))
            continue
        t0 = time.perf_counter()
        fold_dir.mkdir(parents=True, exist_ok=True)
        test = table[table.writer.isin(test_w)].reset_index(drop=True)
        if method in ("tdnn", "fusion"):
            manifest = write_fold_training(table, train_w, fold_dir)
            model_path = train(manifest.parent, fold_dir / "run", run_config, resume=resume and (fold_dir / "run").exists(),
                               progress=progress)
            verifier = Verifier.from_checkpoint(model_path)
            scorer, threshold = verifier, verifier.threshold()
        if method == "fusion":
            val = table[table.writer.isin(verifier.provenance["val_writers"])].reset_index(drop=True)
            for k in ks:
                fused, fit = fuse_fold(verifier, DTWVerifier(dtw_config), val, test, k, draws, seed, progress)
                fused["fold"] = f
                atomic_write_json(done[k].with_suffix(".json"), fit)
                atomic_write_text(done[k], fused.to_csv(index=False, float_format="%.9g", lineterminator="\n"))
                parts[k].append(fused)
            logger.info("fold %d: %d writers scored in %.0f s", f, len(test_w), time.perf_counter() - t0)
            continue
        if method == "tdnn":
            try:
                a, b = verifier.log_odds_map()  # fitted once per fold model
                calibrate = lambda s, a=a, b=b: a * np.asarray(s, np.float64) + b  # noqa: E731
            except VerifierError as e:
                logger.warning("fold %d: %s; its raw scores are pooled uncalibrated", f, e)
                calibrate = None
        else:
            scorer, threshold, calibrate = DTWVerifier(dtw_config), None, None
        for k in ks:
            scores = score_protocols(scorer, test, sk_protocols(test, k, draws, seed), progress)
            scores["fold"] = f
            if calibrate is not None:  # each fold model's scores as calibrated log-odds: one scale for the pooled figures
                scores["raw_score"] = scores["score"]
                scores["score"] = calibrate(scores["raw_score"].to_numpy())
            if threshold is not None:
                scores["threshold"] = float(calibrate([threshold])[0]) if calibrate is not None else threshold
            atomic_write_text(done[k], scores.to_csv(index=False, float_format="%.9g", lineterminator="\n"))
            parts[k].append(scores)
        logger.info("fold %d: %d writers scored in %.0f s", f, len(test_w), time.perf_counter() - t0)
    results = {}
    fingerprint = datasets.fingerprint(table)
    for k in ks:
        pooled = pd.concat(parts[k], ignore_index=True)
        meta = {"method": method, "data": str(data), "data_fingerprint": fingerprint, "protocol": f"S{k:02d}",
                "protocol_text": f"{folds}-fold writer-disjoint cross-validation; per test writer the first {k} genuine signatures "
                                 "(session 1 first) are references" + draws_text(table, k, draws)
                                 + "; random forgeries are the first genuine signature of the other writers of the same fold; "
                                 "global figures pool the folds' scores" + (
                                     " (each fold model's scores mapped to log-odds by a logistic fit on its own validation "
                                     "writers' scores; raw scores in raw_score)" if method == "tdnn" else "") + (
                                     "; fusion: TDNN and DTW scores combined by a linear logistic fit on each fold's "
                                     "validation writers (inside the training folds)" if method == "fusion" else ""),
                "folds": folds, "seed": seed}
        if method in ("tdnn", "fusion"):
            meta["training"] = run_config.to_dict()
            meta["initial_model"] = {"file": init, "sha256": init_sha256}  # what train.init resolved to ("": random weights)
        if method in ("dtw", "fusion"):
            meta["dtw"] = dtw_config.to_dict()
        rep = report(pooled, meta)
        rep["within_fold_global_mean"] = fold_means(pooled)
        results[k] = (pooled, rep)
    return results


def writer_splits(names: Sequence[str], folds: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """The seeded writer-disjoint folds as (training writers, test writers) per fold, fold 1 first; `ProtocolError`
    unless 2 <= ``folds`` <= the number of writers."""
    if not 2 <= folds <= len(names):
        raise ProtocolError(f"--folds must be between 2 and the number of writers ({len(names)}), got {folds}")
    return datasets.writer_folds(names, folds, seed)


def initial_model(run_config: RunConfig, table: pd.DataFrame) -> str:
    """The model file the folds' training starts from (``train.init``; ``""``: random weights), refused
    (`ProtocolError`) when it was trained on this corpus: every fold's test writers would have reached training."""
    from .model import CheckpointError, load_checkpoint
    from .train import resolve_init

    init = resolve_init(run_config)
    if not init:
        return init
    try:
        prov = load_checkpoint(init).provenance
    except CheckpointError as e:
        raise ProtocolError(f"train.init: {e}") from None
    if prov.get("data_fingerprint") == datasets.fingerprint(table):
        raise ProtocolError(f"train.init: {init} was trained on this corpus, so every fold's test writers "
                            "would reach training; pre-train on other data (e.g. synthetic writers)")
    names = datasets.writers(table)
    shared = set(map(str, prov.get("train_writers", []) + prov.get("val_writers", []))) & set(map(str, names))
    if shared:  # a subset of this corpus has another fingerprint; same names may also be chance (U1 of two corpora)
        logger.warning("train.init: %s was trained on writers named like %d of this corpus's (%s...): if they are the same "
                       "people, the test folds are not independent of it", init, len(shared), ", ".join(sorted(shared)[:3]))
    return init


def write_fold_training(table: pd.DataFrame, train_writers: Sequence[str], fold_dir: Path) -> Path:
    """The fold's training writers' rows as ``fold_dir/train/manifest.csv`` (absolute paths): what its model learns
    from and validates on."""
    return datasets.write_manifest(table[table.writer.isin(train_writers)].to_dict("records"), fold_dir / "train" / "manifest.csv")


def fold_runs(experiment: str | Path) -> list[Path]:
    """The ``foldN/run`` training folders of an experiment folder (``--method tdnn`` or ``fusion``), fold2 before fold10.

    Raises ProtocolError when there is none."""
    runs = sorted(Path(experiment).glob("fold*/run"), key=lambda p: (len(p.parent.name), p.parent.name))
    if not runs:
        raise ProtocolError(f"{experiment}: no foldN/run folder (an experiment folder of --method tdnn or fusion)")
    return runs


def _check_finished_fold(fold_dir: Path, run_config) -> None:
    """A finished fold read back on ``--resume`` must have been trained with the settings given now: a fold
    trained otherwise would mix two systems in one pooled report (whose meta names only today's settings)."""
    from .config import ConfigError
    from .train import RunConfig, config_difference

    path = fold_dir / "run" / "config.json"
    if not path.is_file():  # scores without their run (placed there by hand): nothing to compare
        return
    try:  # compared as resolved configs, as a resumed training run is
        saved = RunConfig.read(path).to_dict()
    except ConfigError:
        raise ProtocolError(f"{path}: not a readable run configuration; remove {fold_dir} to train that fold again") from None
    diff = config_difference(saved, run_config.to_dict())
    if diff is not None:
        raise ProtocolError(f"{fold_dir}: this finished fold was trained with other settings ({diff}); resume with the "
                            "settings it was trained with, or write to a new --out")


def _check_fold_init(fold_dir: Path, init_sha256: str) -> None:
    """A fold already trained (or begun) on ``--resume`` must have started from the same initial model file as the
    folds still to train: the settings can be equal while the file they name (``train.init = "synthetic"``, the
    shipped pre-training) was rebuilt in between."""
    from .model import CheckpointError, load_checkpoint
    from .train import initial_weights

    path = fold_dir / "run" / "model.pt"
    if not path.is_file():
        return
    try:
        theirs = load_checkpoint(path).provenance.get("init_sha256", "")
    except CheckpointError as e:
        raise ProtocolError(f"{e}; remove {fold_dir} to train that fold again") from None
    if theirs != init_sha256:
        raise ProtocolError(f"{fold_dir}: this fold started from {initial_weights(theirs)}, the folds to come would start from "
                            f"{initial_weights(init_sha256)} (train.init); resume with the file it started from, or write to a new --out")


def fuse_fold(verifier, dtw, val: pd.DataFrame, test: pd.DataFrame, k: int, draws: int, seed: int,
              progress: Callable[..., None] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fused S_k scores of the test writers, TDNN and DTW combined by a logistic fit on the validation writers, and the fit.

    The validation writers are scored with the same protocol (k capped so
    that each keeps a genuine query); skilled forgeries are the impostors
    of the fit when there are any, else random ones.
    """
    from .calibration import fit_linear_logistic

    kv = fitting_k(val, k)

    def both(tab: pd.DataFrame, kk: int) -> pd.DataFrame:
        protos = sk_protocols(tab, kk, draws, seed)
        a, b = score_protocols(verifier, tab, protos, progress), score_protocols(dtw, tab, protos, progress)
        keys = [c for c in a.columns if c != "score"]
        if not a[keys].equals(b[keys]):  # both follow the protocol's order; anything else is a bug
            raise RuntimeError("TDNN and DTW score tables are not aligned")
        return a.rename(columns={"score": "tdnn_score"}).assign(dtw_score=b["score"].to_numpy())

    v = both(val, kv)
    impostor = "skilled" if (v.kind == "skilled").any() else "random"
    X = lambda d: d[["tdnn_score", "dtw_score"]].to_numpy(np.float64)  # noqa: E731
    try:
        w, b0 = fit_linear_logistic(X(v[v.kind == "genuine"]), X(v[v.kind == impostor]))
    except ValueError as e:
        raise EvaluationError(f"cannot fit the fusion on the validation writers {', '.join(map(str, val.writer.unique()))}: {e}") from None
    t = both(test, k)
    t["score"] = X(t) @ w + b0
    cols = [c for c in t.columns if c not in ("tdnn_score", "dtw_score", "score")]
    fit = {"w_tdnn": float(w[0]), "w_dtw": float(w[1]), "bias": b0, "validation_writers": sorted(map(str, val.writer.unique())),
           "validation_k": kv, "impostors": impostor, "threshold": 0.0}
    return t[cols + ["score", "tdnn_score", "dtw_score"]].assign(threshold=0.0), fit
