"""Running a protocol with a verification method, and the report of its scores.

Run: ``tdnn-siamese evaluate --model M --data D [--protocol S05] --out DIR``
(or ``--method dtw``), or ``tdnn-siamese experiment`` for cross-validation.

Stages pass plain tables, as wespeaker's do: the protocol
(:mod:`tdnn_siamese.protocols`) gives trials, a method
(:class:`tdnn_siamese.verifier.Method`: the TDNN or DTW) scores them into a
*score table* ``writer, query, kind, score`` (kind: genuine, skilled or
random; optional ``draw``, ``fold``, and the ``threshold`` calibrated
before the test), and :func:`report` turns a score table into figures:

- **global**: one threshold for every writer; EER, FRR at FAR 1% and 10%, AUC;
- **writer-specific**: the mean over writers of each writer's EER;
- **at the calibrated threshold**: FAR and FRR at the threshold fixed
  before the test (the model's validation EER point), when the table has one.

Skilled and random forgeries are reported separately. With several
reference draws each figure is the mean over draws (and its standard
deviation). :func:`write_report` writes ``scores.csv``, ``report.json``,
``report.md``, ``far_frr.png`` and ``det.png``, each atomically.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from . import datasets
from .atomic import atomic_write_json, atomic_write_text
from .features import FeatureError
from .formats import InputError
from .metrics import per_writer_eer, summary
from .protocols import Protocol
from .verifier import Method

logger = logging.getLogger(__name__)

IMPOSTOR_KINDS = ("skilled", "random")
SCORE_COLUMNS = ["writer", "query", "kind", "score"]


class EvaluationError(ValueError):
    """A corpus that cannot be evaluated as asked (unusable files, non-finite scores)."""


def represent_table(method: Method, table: pd.DataFrame, rows: Sequence[int],
                    progress: Callable[..., None] | None = None) -> tuple[dict[int, Any], list[str]]:
    """Read, featurise and represent the given rows of a corpus table; (row -> rep, errors)."""
    sigs, ok, errors = [], [], []
    for n, i in enumerate(rows):
        try:
            sigs.append(datasets.read_row(table.loc[i]))
            ok.append(i)
        except InputError as e:
            errors.append(str(e))
        if progress:
            progress("read", n + 1, len(rows))
    try:
        feats = method.features_many(sigs)
    except FeatureError:  # name every signature without features, not just the first
        feats, kept = [], []
        for i, sig in zip(ok, sigs):
            try:
                feats.append(method.features(sig))
                kept.append(i)
            except FeatureError as e:
                errors.append(str(e))
        ok = kept
    reps = method.represent(feats)
    return {i: reps[j] for j, i in enumerate(ok)}, errors


def score_protocols(method: Method, table: pd.DataFrame, protocols: Sequence[Protocol],
                    progress: Callable[..., None] | None = None) -> pd.DataFrame:
    """The score table of every trial of every protocol (draw).

    Every file the protocols use is read and represented once, and a
    writer's draw that repeats an earlier draw's references and queries
    (its pool holds just k: SVC2004 at S10) is scored once. An unusable
    file is an error (dropping it would change the protocol): the message
    lists them all.
    """
    table = table.reset_index(drop=True)
    used = sorted({i for p in protocols for r in p.references.values() for i in r} | {int(q) for p in protocols for q in p.trials["query"]})
    reps, errors = represent_table(method, table, used, progress)
    if errors:
        raise EvaluationError(f"{len(errors)} file(s) of the protocol cannot be used (fix or remove them from the corpus):\n  "
                              + "\n  ".join(errors))
    parts = []
    n_done, n_total = 0, sum(len(p.references) for p in protocols)
    scored: dict[tuple, np.ndarray] = {}  # (writer, references, queries) -> scores: a repeated draw is not scored again
    for p in protocols:
        for w, refs in p.references.items():
            t = p.trials[p.trials.writer == w]
            key = (w, tuple(refs), tuple(t["query"].tolist()))
            if key not in scored:
                template = method.template(str(w), _take_dict(reps, refs), [str(table.at[i, "path"]) for i in refs])
                scored[key] = np.asarray(method.score_reps(template, _take_dict(reps, t["query"].tolist())))
            s = scored[key]
            parts.append(pd.DataFrame({"writer": w, "query": table.loc[t["query"], "path"].astype(str).to_numpy(),
                                       "kind": t["kind"].to_numpy(), "score": s, "draw": p.draw}))
            n_done += 1
            if progress:
                progress("scoring", n_done, n_total)
    scores = pd.concat(parts, ignore_index=True)
    if not np.isfinite(scores["score"]).all():
        raise EvaluationError("a method produced a non-finite score; this is a bug, please report it")
    return scores if len(protocols) > 1 else scores.drop(columns="draw")


def _take_dict(reps: dict[int, Any], idx: Sequence[int]):
    items = [reps[int(i)] for i in idx]
    return np.stack(items) if items and isinstance(items[0], np.ndarray) and items[0].ndim == 1 else items


# --------------------------------------------------------------------------- the report


def _figures(scores: pd.DataFrame) -> dict[str, Any]:
    """Global, writer-specific and calibrated figures of one score table (one draw)."""
    gen = scores[scores.kind == "genuine"]
    out: dict[str, Any] = {}
    for kind in IMPOSTOR_KINDS:
        imp = scores[scores.kind == kind]
        if gen.empty or imp.empty:
            out[kind] = None  # a missing class: reported as not available
            continue
        both = pd.concat([gen, imp])
        per = per_writer_eer(both["writer"].to_numpy(), (both["kind"] == "genuine").to_numpy(), both["score"].to_numpy())
        ws = float(np.mean(list(per.values()))) if per else None  # writer_specific_eer's figure
        res: dict[str, Any] = {"global": summary(gen["score"], imp["score"]),
                               "writer_specific": {"eer": ws, "n_writers": len(per), "per_writer": per}}
        if "threshold" in scores:
            res["calibrated"] = {"far": float(np.mean(imp["score"] >= imp["threshold"])),
                                 "frr": float(np.mean(gen["score"] < gen["threshold"]))}
        out[kind] = res
    return out


def fold_means(scores: pd.DataFrame) -> dict[str, float | None]:
    """Global EER within each fold (one model and one threshold per fold), averaged over folds.

    Pooling the scores of several folds' models under one threshold also
    measures how well their score scales agree; this figure does not.
    """
    out = {}
    for kind in IMPOSTOR_KINDS:
        per = [f[kind]["global"]["eer"] for _, part in scores.groupby("fold") if (f := _figures(part))[kind] is not None]
        out[kind] = float(np.mean(per)) if per else None
    return out


def _mean_std(values: list[dict]) -> tuple[dict, dict]:
    """Element-wise mean and standard deviation of nested dicts of numbers (None stays None)."""
    first = values[0]
    if first is None or any(v is None for v in values):
        return None, None
    if isinstance(first, dict):
        pairs = {k: _mean_std([v[k] for v in values]) for k in first}
        return {k: m for k, (m, _) in pairs.items()}, {k: s for k, (_, s) in pairs.items()}
    arr = np.array(values, dtype=np.float64)
    m = float(arr.mean())
    return (int(m) if isinstance(first, int) and m.is_integer() else m), float(arr.std())


def report(scores: pd.DataFrame, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Figures of a score table (see the module docstring) plus ``meta`` (protocol, data, model...)."""
    draws = sorted(scores["draw"].unique()) if "draw" in scores else [0]
    per_draw = [_figures(scores[scores["draw"] == d] if "draw" in scores else scores) for d in draws]
    mean, std = _mean_std(per_draw) if len(per_draw) > 1 else (per_draw[0], None)
    counts = {k: int((scores.kind == k).sum() // len(draws)) for k in ("genuine", *IMPOSTOR_KINDS)}
    out = {**(meta or {}), "draws": len(draws), "n_writers": int(scores["writer"].nunique()), "trials_per_draw": counts,
           "results": mean}
    if std is not None:
        out["results_std_over_draws"] = std
    return out


def missing_reason(rep: dict[str, Any], kind: str) -> str:
    """Why ``rep`` has no figures for impostor ``kind``: no trials of that kind, or no genuine trials to weigh them
    against (a protocol of k references leaves none when no writer has more than k genuine signatures)."""
    counts = rep["trials_per_draw"]
    missing = [k for k in ("genuine", kind) if not counts.get(k)]
    return f"no {' and no '.join(missing)} trials" if missing else f"no {kind} figures"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}%"


def markdown(rep: dict[str, Any]) -> str:
    """A readable report.md."""
    lines = [f"# Verification report: {rep.get('method', '?')} on {rep.get('data', '?')}", ""]
    lines += [f"- protocol: **{rep.get('protocol', '?')}** ({rep.get('protocol_text', '')})",
              f"- writers: {rep['n_writers']}; trials per draw: " + ", ".join(f"{v} {k}" for k, v in rep["trials_per_draw"].items()),
              f"- reference draws: {rep['draws']}" + (" (figures are means over draws; standard deviations in report.json)" if rep["draws"] > 1 else "")]
    for key in ("model", "folds", "data_fingerprint", "command"):
        if rep.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: `{rep[key]}`")
    if "initial_model" in rep:  # experiments that train: where each fold's training started
        init = rep["initial_model"]
        lines.append(f"- initial weights: `{init['file']}` (SHA-256 `{init['sha256']}`)" if init["file"] else "- initial weights: random")
    lines += ["", "Accept when score >= threshold; higher = more genuine. *Global*: one threshold for all writers, "
              "chosen a posteriori (the EER point). *Writer-specific*: each writer's own EER threshold, averaged over writers.", ""]
    lines += ["| forgeries | EER global | EER writer-specific | FRR @ FAR 1% | FRR @ FAR 10% | AUC | FAR / FRR at calibrated threshold |",
              "|---|---|---|---|---|---|---|"]
    for kind in IMPOSTOR_KINDS:
        r = rep["results"].get(kind)
        if r is None:
            lines.append(f"| {kind} | n/a ({missing_reason(rep, kind)}) | | | | | |")
            continue
        g, ws = r["global"], r["writer_specific"]
        cal = r.get("calibrated")
        lines.append(f"| {kind} | {_pct(g['eer'])} | {_pct(ws['eer'])} ({ws['n_writers']} writers) | {_pct(g['frr_at_far_1'])} | "
                     f"{_pct(g['frr_at_far_10'])} | {g['auc']:.4f} | " + (f"{_pct(cal['far'])} / {_pct(cal['frr'])}" if cal else "n/a") + " |")
    lines += _hardest_writers(rep["results"])
    if rep.get("within_fold_global_mean"):
        m = rep["within_fold_global_mean"]
        lines += ["", f"Global EER within each fold (one model and one threshold per fold), mean over the {rep.get('folds')} folds: "
                  f"skilled {_pct(m['skilled'])}, random {_pct(m['random'])}. The table's global figures pool all folds' scores "
                  "under one threshold, so they also pay for differences between the folds' score scales."]
    lines += ["", "Plots: `far_frr.png` (FAR and FRR against the threshold, EER points marked), `det.png` (DET curves).", ""]
    return "\n".join(lines)


def _hardest_writers(results: dict[str, Any], n: int = 5) -> list[str]:
    """Lines naming the writers with the highest own EER per kind of forgery: a writer-specific mean can hide a
    few writers the system fails."""
    lines = []
    for kind in IMPOSTOR_KINDS:
        per = ((results.get(kind) or {}).get("writer_specific") or {}).get("per_writer") or {}
        if not per:
            continue
        worst = sorted(((e, w) for w, e in per.items() if e > 0), key=lambda x: (-x[0], x[1]))[:n]
        zero = sum(e == 0 for e in per.values())
        text = ", ".join(f"{w} {_pct(e)}" for e, w in worst) if worst else "none"
        lines.append(f"- {kind} forgeries, writers with the highest own EER: {text}; {zero} of {len(per)} writers at 0%.")
    return ["", "Per writer (all figures in report.json):", ""] + lines if lines else []


def write_report(out: str | Path, scores: pd.DataFrame, rep: dict[str, Any]) -> dict[str, Path]:
    """Write scores.csv, report.json, report.md, far_frr.png and det.png into ``out``; returns their paths."""
    from .plotting import plot_det, plot_far_frr

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("scores.csv", "report.json", "report.md", "far_frr.png", "det.png")}
    buf = io.StringIO()
    cols = SCORE_COLUMNS + [c for c in ("draw", "fold", "threshold", "raw_score", "tdnn_score", "dtw_score") if c in scores]
    scores[cols].to_csv(buf, index=False, float_format="%.9g", lineterminator="\n")
    atomic_write_text(paths["scores.csv"], buf.getvalue())
    atomic_write_json(paths["report.json"], rep, default=_json_default)
    atomic_write_text(paths["report.md"], markdown(rep))
    plot_far_frr(scores, paths["far_frr.png"], title=f"{rep.get('method', '')} {rep.get('protocol', '')}".strip())
    plot_det(scores, paths["det.png"], title=f"{rep.get('method', '')} {rep.get('protocol', '')}".strip())
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
