"""The ``tdnn-siamese`` command line: argparse subcommands over the library.

This is the only module that prints to the user and chooses exit codes:
0 success, 2 an error (bad input, bad arguments), 130 interrupted;
``verify`` answers like grep: 0 every query accepted, 1 any rejected, 2 an error. Library
errors become one line on stderr, never a traceback. Heavy modules are
imported inside the subcommands so that ``--help`` and small commands start fast.

Run ``tdnn-siamese --help`` or ``python -m tdnn_siamese --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK, EXIT_REJECTED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class CLIError(Exception):
    """An error the CLI reports as one line and exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or settings, not a bug."""
    from .config import ConfigError
    from .datasets import DatasetError
    from .features import FeatureError
    from .evaluate import EvaluationError
    from .formats import InputError
    from .protocols import ProtocolError
    from .verifier import VerifierError

    return (CLIError, InputError, DatasetError, FeatureError, ConfigError, VerifierError, ProtocolError, EvaluationError, OSError)


# --------------------------------------------------------------------------- subcommands


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import synthesize

    for name in ("writers", "genuine"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name} must be at least 1")
    if args.skilled < 0:
        raise CLIError("--skilled must be at least 0")
    t = time.perf_counter()
    manifest = synthesize(args.out, args.writers, args.genuine, args.skilled, args.seed)
    n = args.writers * (args.genuine + args.skilled)
    print(f"wrote {n} signatures of {args.writers} synthetic writers to {args.out} ({time.perf_counter() - t:.1f} s)")
    print(f"manifest: {manifest}")
    return EXIT_OK


def _feature_config(args: argparse.Namespace):
    from .features import FeatureConfig

    return FeatureConfig(feature_set=args.features, n_steps=None if args.variable_length else args.n_steps)


def _describe_file(path: str, cfg) -> None:
    from .features import extract
    from .formats import format_of, read_signature

    sig = read_signature(path)
    f = extract(sig, cfg)
    print(f"{path}: format {format_of(path)}, {len(sig)} points, {sig.duration_ms / 1000:.2f} s, "
          f"{sig.n_strokes} pen-down stroke(s), channels: {', '.join(('t', 'x', 'y', 'pen_down') + sig.channels)}")
    print(f"features ({cfg.feature_set}): {f.shape[0]} steps x {f.shape[1]} channels: {', '.join(cfg.channels)}")


def _summarise_corpus(root: str, cfg) -> tuple[int, list[str]]:
    """Read and featurise every file of a corpus; print a summary; return (n_ok, errors)."""
    import numpy as np

    from . import datasets
    from .features import FeatureError, extract
    from .formats import SignatureFormatError

    table = datasets.load(root)
    counts = table.groupby("label").size().to_dict()
    print(f"{root}: {len(table)} files, {table['writer'].nunique()} writers, "
          + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("genuine", "skilled")))
    errors, durations, points, strokes, lengths = [], [], [], [], []
    t0 = time.perf_counter()
    for row in table.to_dict("records"):
        try:
            sig = datasets.read_row(row)
            f = extract(sig, cfg)
        except (SignatureFormatError, FeatureError) as e:
            errors.append(str(e))
            continue
        durations.append(sig.duration_ms / 1000)
        points.append(len(sig))
        strokes.append(sig.n_strokes)
        lengths.append(len(f))
    dt = time.perf_counter() - t0
    if durations:
        q = lambda v: "/".join(f"{x:.3g}" for x in np.percentile(v, [10, 50, 90]))  # noqa: E731
        print(f"read and featurised {len(durations)} files in {dt:.1f} s "
              f"({len(durations) / max(dt, 1e-9):.0f} files/s); 10th/50th/90th percentiles:")
        print(f"  duration (s) {q(durations)}   points {q(points)}   pen-down strokes {q(strokes)}")
        print(f"  features: {cfg.feature_set}, {'variable length (' + q(lengths) + ' steps)' if cfg.variable_length else f'{cfg.n_steps} steps'}"
              f" x {cfg.n_features} channels")
    return len(durations), errors


def cmd_inspect(args: argparse.Namespace) -> int:
    cfg = _feature_config(args)
    if Path(args.path).is_file() and not args.path.lower().endswith("manifest.csv"):
        _describe_file(args.path, cfg)
        return EXIT_OK
    _, errors = _summarise_corpus(args.path, cfg)
    return _report_errors(errors)


def _report_errors(errors: list[str]) -> int:
    """Print each unusable file and a count; exit code 2 if there was any."""
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        print(f"error: {len(errors)} file(s) could not be used", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


class Progress:
    """Renders library progress events on stderr: a live bar on a terminal, a line per epoch elsewhere."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()

    def _bar(self, text: str, done: int, total: int) -> None:
        if not self.tty:
            return
        width = 30
        fill = int(width * done / max(total, 1))
        self.stream.write(f"\r{text} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}\x1b[K")
        self.stream.flush()

    def __call__(self, event: str, *args) -> None:
        if event == "read":
            done, total = args
            self._bar("reading", done, total)
            if done == total and self.tty:
                self.stream.write("\n")
        elif event == "scoring":
            done, total = args
            self._bar("scoring writers", done, total)
            if done == total and self.tty:
                self.stream.write("\n")
        elif event == "fold":
            f, n, n_train, n_test = args
            self.stream.write(f"== fold {f}/{n}: {n_train} training writers, {n_test} test writers "
                              f"({time.perf_counter() - self.t0:.0f} s so far)\n")
            self.stream.flush()
        elif event == "batch":
            epoch, done, total, loss = args
            self._bar(f"epoch {epoch:3d} loss {loss:.4f}", done, total)
        elif event == "epoch":
            (row,) = args
            line = (f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  val EER skilled {100 * row['val_eer_skilled']:5.2f}%  "
                    f"random {100 * row['val_eer_random']:5.2f}%  {row['seconds']:.0f} s{' *' if row['best'] else ''}")
            self.stream.write(f"\r{line}\x1b[K\n" if self.tty else f"{line}\n")
            self.stream.flush()


def _run_config(args: argparse.Namespace):
    """The training configuration from --config, the shortcut flags and --set (later wins)."""
    from .train import RunConfig, apply_sets, read_config_file

    sections = read_config_file(args.config) if args.config else {}
    shortcuts = [f"model.preset={args.preset}" if args.preset else None]
    for flag, key in (("loss", "loss"), ("distance", "distance"), ("epochs", "epochs"), ("seed", "seed")):
        value = getattr(args, flag)
        if value is not None:
            shortcuts.append(f"train.{key}={json.dumps(value)}")
    sections = apply_sets(sections, [s for s in shortcuts if s] + list(args.set))
    return RunConfig.from_sections(sections)


def cmd_train(args: argparse.Namespace) -> int:
    import pandas as pd

    from .train import RunConfig, summarise_metrics, train

    out = Path(args.out)
    if args.resume:
        if args.config or args.set or any(getattr(args, f) is not None for f in ("preset", "loss", "distance", "epochs", "seed")):
            raise CLIError("--resume continues with the run's saved config.json; do not pass --config, --set or other settings")
        if not (out / "config.json").is_file():
            raise CLIError(f"{out}: no config.json, nothing to resume")
        from .config import ConfigError

        try:
            saved = json.loads((out / "config.json").read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{out / 'config.json'}: {e}") from None
        cfg = RunConfig.from_dict(saved)
    else:
        cfg = _run_config(args)
    t = time.perf_counter()
    model_path = train(args.data, out, cfg, resume=args.resume, progress=Progress())
    what = f"{cfg.model.preset} TDNNs" if cfg.model.members > 1 else f"a {cfg.model.preset} TDNN"
    print(f"trained {what} in {time.perf_counter() - t:.0f} s; {summarise_metrics(pd.read_csv(out / 'metrics.csv'))}")
    curves = f" (members' curves: {out / 'members'})" if cfg.model.members > 1 else ""
    print(f"model: {model_path}\nmetrics: {out / 'metrics.csv'}{curves}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole job on a corpus: check, train, evaluate on held-out writers, enroll and verify."""
    from datetime import datetime

    from . import datasets
    from .evaluate import report, score_protocols, write_report
    from .protocols import sk_protocols
    from .store import TemplateStore
    from .formats import read_signature
    from .train import train
    from .verifier import Verifier

    t0 = time.perf_counter()
    out = Path(args.out or f"runs/demo-{datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and any(out.iterdir()):
        raise CLIError(f"{out} exists and is not empty; choose another --out (nothing was overwritten)")
    run_cfg = _run_config(argparse.Namespace(config=None, set=[], preset=None, loss=None, distance=None, epochs=args.epochs, seed=args.seed))
    print(f"== 1/5 reading and preprocessing the corpus at {args.data}")
    _, errors = _summarise_corpus(args.data, run_cfg.features)  # the features the demo trains on
    if errors:
        return _report_errors(errors)
    table = datasets.load(args.data)
    names = datasets.writers(table)
    if len(names) < 6:
        raise CLIError(f"{args.data}: the demo needs at least 6 writers (3 to train, 3 to test); it has {len(names)}")
    train_w, test_w = datasets.split_writers(names, max(3, len(names) // 3), seed=args.seed)
    manifest = datasets.write_manifest(table[table.writer.isin(train_w)].to_dict("records"), out / "train" / "manifest.csv")
    print(f"\n== 2/5 training a Siamese TDNN on {len(train_w)} writers (validation writers taken from them); "
          f"{len(test_w)} writers held out for testing: {', '.join(test_w)}")
    model_path = train(manifest.parent, out / "run", run_cfg, progress=Progress())
    verifier = Verifier.from_checkpoint(model_path)
    threshold = verifier.threshold()
    print(f"model: {model_path} (scoring strategy {verifier.strategy}, threshold {threshold:.6g} at the validation EER)")

    print("\n== 3/5 evaluating the held-out writers with protocol S05")
    test = table[table.writer.isin(test_w)].reset_index(drop=True)
    scores = score_protocols(verifier, test, sk_protocols(test, 5), Progress())
    scores["threshold"] = threshold
    rep = report(scores, {"method": "tdnn", "data": args.data, "protocol": "S05", "model": str(model_path),
                          "protocol_text": f"{len(test_w)} writers held out from training; per writer the first 5 genuine "
                                           "signatures are references; random forgeries are the other test writers' first genuine"})
    write_report(out / "report", scores, rep)
    _print_table(rep)

    writer = test_w[0]
    rows = test[test.writer == writer]
    gen = rows[rows.label == "genuine"].sort_values(["session", "number"], na_position="last")["path"].tolist()
    forg = rows[rows.label == "skilled"]["path"].tolist() or test[(test.writer != writer) & (test.label == "genuine")]["path"].tolist()[:1]
    store_path = out / "templates.db"
    print(f"\n== 4/5 enrolling writer {writer} with 5 genuine signatures into {store_path}")
    _enroll(verifier, store_path, writer, gen[:5])
    with TemplateStore(store_path, verifier.fingerprint, create=False) as store:
        template = verifier.template(writer, store.template_embeddings(writer), store.sources(writer))
    print(f"\n== 5/5 verifying one genuine signature and one forgery against writer {writer}")
    for path, truth in ((gen[5], "genuine"), (forg[0], "skilled forgery" if len(rows[rows.label == "skilled"]) else "another writer")):
        d = verifier.verify(template, read_signature(path))
        print(f"{path}  {'genuine' if d.accepted else 'forgery'}  {d.score:.6f}  {d.threshold:.6f}   (truth: {truth})")
    curve = ("the trained model and its training curve" if run_cfg.model.members == 1 else
             "the trained ensemble, its members' kept epochs (curves: run/members/m*/metrics.csv)")
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s. Outputs in {out}/:\n"
          f"  run/model.pt, run/metrics.csv       {curve}\n"
          f"  report/report.md, report/report.json, report/scores.csv\n"
          f"  report/far_frr.png, report/det.png  FAR/FRR against threshold, DET curves\n"
          f"  templates.db                        the template store (tdnn-siamese store list --store {store_path})")
    return EXIT_OK


# --------------------------------------------------------------------------- evaluate / experiment


def _fresh_out(out: Path) -> None:
    """Refuse to overwrite a report a user already has."""
    if (out / "report.json").exists():
        raise CLIError(f"{out} already holds a report; choose another --out (nothing was overwritten)")


def _print_table(rep: dict) -> None:
    from .evaluate import IMPOSTOR_KINDS, missing_reason

    pct = lambda x: "n/a" if x is None else f"{100 * x:6.2f}%"  # noqa: E731
    print(f"{rep.get('method', '')} {rep.get('protocol', '')}: {rep['n_writers']} writers, "
          + ", ".join(f"{v} {k}" for k, v in rep["trials_per_draw"].items()) + " trials" + (f" x {rep['draws']} draws" if rep["draws"] > 1 else ""))
    print(f"{'forgeries':<10} {'EER global':>11} {'EER writer':>11} {'FRR@FAR1%':>10} {'FRR@FAR10%':>11} {'AUC':>7}  calibrated FAR/FRR")
    for kind in IMPOSTOR_KINDS:
        r = rep["results"].get(kind)
        if r is None:
            print(f"{kind:<10} {'n/a (' + missing_reason(rep, kind) + ')':>11}")
            continue
        g, cal = r["global"], r.get("calibrated")
        print(f"{kind:<10} {pct(g['eer']):>11} {pct(r['writer_specific']['eer']):>11} {pct(g['frr_at_far_1']):>10} "
              f"{pct(g['frr_at_far_10']):>11} {g['auc']:7.4f}  " + (f"{pct(cal['far']).strip()} / {pct(cal['frr']).strip()}" if cal else "n/a"))


def _method(args: argparse.Namespace):
    """The scorer of `evaluate`: a trained model (tdnn) or the DTW baseline."""
    if args.method == "dtw":
        if args.model:
            raise CLIError("--method dtw takes no --model")
        from .dtw import DTWConfig, DTWVerifier

        return DTWVerifier(DTWConfig()), None
    if not args.model:
        raise CLIError("--method tdnn needs --model M (a model.pt from train)")
    from .verifier import Verifier

    v = Verifier.from_checkpoint(args.model, strategy=args.strategy)
    return v, v.threshold()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import datasets
    from .evaluate import report, score_protocols, write_report
    from .protocols import draws_text, parse_protocol, sk_protocols

    out = Path(args.out)
    _fresh_out(out)
    k = parse_protocol(args.protocol)
    method, threshold = _method(args)
    table = datasets.load(args.data)
    t = time.perf_counter()
    scores = score_protocols(method, table, sk_protocols(table, k, args.draws, args.seed), Progress())
    if threshold is not None:
        scores["threshold"] = threshold
    meta = {"method": args.method, "data": args.data, "data_fingerprint": datasets.fingerprint(table), "protocol": f"S{k:02d}",
            "protocol_text": f"per writer the first {k} genuine signatures (session 1 first) are references"
                             + draws_text(table, k, args.draws)
                             + "; random forgeries are the first genuine signature of every other writer",
            "model": args.model, "strategy": getattr(method, "strategy", None), "threshold": threshold}
    if args.model:
        trained_on = set(method.provenance.get("train_writers", [])) | set(method.provenance.get("val_writers", []))
        overlap = sorted(trained_on & set(map(str, table["writer"])))
        if overlap:
            meta["warning"] = f"{len(overlap)} evaluated writer name(s) were also training or validation writers of the model"
            print(f"warning: {meta['warning']} (e.g. {', '.join(overlap[:3])}): these figures are not a held-out test", file=sys.stderr)
    rep = report(scores, meta)
    paths = write_report(out, scores, rep)
    _print_table(rep)
    print(f"evaluated in {time.perf_counter() - t:.0f} s; report: {paths['report.md']} (also scores.csv, report.json, far_frr.png, det.png)")
    return EXIT_OK


def cmd_experiment(args: argparse.Namespace) -> int:
    from .evaluate import write_report
    from .experiment import run_experiment
    from .protocols import parse_protocol

    out = Path(args.out)
    ks = sorted({parse_protocol(p.strip()) for p in args.protocol.split(",") if p.strip()})
    if not ks:
        raise CLIError("--protocol needs at least one protocol, e.g. S05 or S05,S10")
    folders = {k: out if len(ks) == 1 else out / f"S{k:02d}" for k in ks}
    for d in folders.values():
        _fresh_out(d)
    if args.method == "dtw" and (args.config or args.set or any(getattr(args, f) is not None for f in ("preset", "loss", "distance", "epochs"))):
        raise CLIError("training options apply to --method tdnn and fusion only")
    cfg = _run_config(args) if args.method in ("tdnn", "fusion") else None
    t = time.perf_counter()
    results = run_experiment(args.data, out, method=args.method, folds=args.folds, ks=ks, draws=args.draws,
                             seed=args.seed or 0, run_config=cfg, resume=args.resume, progress=Progress())
    seconds = round(time.perf_counter() - t, 1)
    for k, (scores, rep) in results.items():
        rep["seconds"] = seconds
        paths = write_report(folders[k], scores, rep)
        _print_table(rep)
        m = rep["within_fold_global_mean"]
        fmt = lambda x: "n/a" if x is None else f"{100 * x:.2f}%"  # noqa: E731
        print(f"global EER within each fold, mean over folds: skilled {fmt(m['skilled'])}, random {fmt(m['random'])}")
        print(f"report: {paths['report.md']} (also scores.csv, report.json, far_frr.png, det.png)")
    print(f"experiment finished in {seconds:.0f} s")
    return EXIT_OK


# --------------------------------------------------------------------------- enroll / verify / store


def _read_for_model(paths: Sequence[str], verifier) -> tuple[list, list[str], list[str], list[str]]:
    """Read and featurise files: (features, paths, content hashes, errors), an error per unusable file."""
    import hashlib

    from .features import FeatureError
    from .formats import InputError, read_signature

    feats, ok, hashes, errors = [], [], [], []
    for path in paths:
        try:
            sig = read_signature(path)
            feats.append(verifier.features(sig))
        except (InputError, FeatureError) as e:
            errors.append(str(e) if str(path) in str(e) else f"{path}: {e}")
            continue
        except OSError as e:
            errors.append(f"{path}: {e.strerror or e}")
            continue
        ok.append(str(path))
        hashes.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return feats, ok, hashes, errors


def _enroll(verifier, store_path: str | Path, writer: str, files: Sequence[str], replace: bool = False) -> tuple[int, int]:
    """Embed reference files and add them to a writer in a store, all or nothing; (added, total)."""
    from .store import TemplateStore

    feats, ok, hashes, errors = _read_for_model(files, verifier)
    if errors:
        _report_errors(errors)
        raise CLIError(f"nothing enrolled for writer {writer!r}: every reference must be usable")
    emb = verifier.represent(feats)
    with TemplateStore(store_path, verifier.fingerprint) as store:
        added = store.add(writer, emb, ok, hashes, replace=replace, spread=(verifier.distance.kind, verifier.spread))
        return added, len(store.template_embeddings(writer))


def _spread_text(stats: dict) -> str:
    """A writer's reference spread as ``store show`` prints it: in the model's own distance, as recorded at
    enrollment by the CLI; stores written before that hold the cosine distance of the flattened embeddings."""
    if "spread_distance" in stats:
        value = stats.get("spread")
        return f"reference spread (mean pairwise {stats['spread_distance']} distance) {'n/a (one reference)' if value is None else f'{value:.4f}'}"
    if stats.get("mean_pairwise_cosine_distance") is not None:
        return (f"reference spread {stats['mean_pairwise_cosine_distance']:.4f} (mean pairwise cosine distance of the flattened "
                "embeddings, from an older version; enroll again for the model's own distance)")
    return "reference spread not recorded (enrolled without the model's distance)"


def cmd_enroll(args: argparse.Namespace) -> int:
    from .verifier import Verifier

    if not args.writer.strip():
        raise CLIError("--writer needs a non-empty name")
    verifier = Verifier.from_checkpoint(args.model)
    added, total = _enroll(verifier, args.store, args.writer, args.files, args.replace)
    print(f"enrolled {added} reference(s) for writer {args.writer} in {args.store} ({total} in all)")
    return EXIT_OK


def _threshold(args: argparse.Namespace, verifier) -> tuple[float, str]:
    """The decision threshold and where it came from: explicit, at a FAR, or the model's EER point."""
    if args.threshold is not None:
        import math

        if not math.isfinite(args.threshold):
            raise CLIError("--threshold must be a finite number")
        return args.threshold, "explicit"
    if args.far is not None:
        return verifier.threshold(args.far), f"FAR {args.far:g} on the model's validation scores"
    return verifier.threshold(), "EER point on the model's validation scores"


def cmd_verify(args: argparse.Namespace) -> int:
    from .store import TemplateStore
    from .verifier import Verifier

    if bool(args.store) == bool(args.references):
        raise CLIError("give either --store S --writer W, or --references REF... -- FILE...")
    if args.store and not args.writer:
        raise CLIError("--store needs --writer W")
    if not args.files:
        raise CLIError("no query files" + (" (after --references REF..., put the queries after --)" if args.references else ""))
    verifier = Verifier.from_checkpoint(args.model, strategy=args.strategy)
    threshold, origin = _threshold(args, verifier)
    if args.store:
        with TemplateStore(args.store, verifier.fingerprint, create=False) as store:
            template = verifier.template(args.writer, store.template_embeddings(args.writer), store.sources(args.writer))
    else:
        feats, ok, _, errors = _read_for_model(args.references, verifier)
        if errors:
            _report_errors(errors)
            raise CLIError("every reference must be usable")
        template = verifier.template(args.writer or "references", verifier.represent(feats), ok)
    feats, ok, _, errors = _read_for_model(args.files, verifier)
    scores = verifier.score_reps(template, verifier.represent(feats)) if feats else []
    results = [{"file": f, "decision": "genuine" if sc >= threshold else "forgery", "accepted": bool(sc >= threshold),
                "score": float(sc), "threshold": float(threshold)} for f, sc in zip(ok, scores)]
    if args.json:
        print(json.dumps({"model": args.model, "writer": template.writer, "references": template.n_references,
                          "strategy": verifier.strategy, "threshold": threshold, "threshold_from": origin,
                          "results": results, "errors": errors}, indent=2))
    else:
        for r in results:
            print(f"{r['file']}  {r['decision']}  {r['score']:.6f}  {r['threshold']:.6f}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        return EXIT_ERROR
    return EXIT_OK if all(r["accepted"] for r in results) else EXIT_REJECTED


def cmd_store(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .store import TemplateStore

    when = lambda t: datetime.fromtimestamp(t).isoformat(timespec="seconds")  # noqa: E731
    if args.action in ("show", "delete") and not args.writer:
        raise CLIError(f"store {args.action} needs --writer W")
    with TemplateStore(args.store, None, create=False) as store:
        if args.action == "list":
            meta, ws = store.meta(), store.writers()
            print(f"{args.store}: {len(ws)} writer(s), model fingerprint {meta.get('model_fingerprint', '?')[:12]}, "
                  f"{meta.get('embedding_dim', '?')}-d embeddings")
            for w in ws:
                print(f"{w.writer}  {w.n_references} reference(s)  updated {when(w.updated)}")
        elif args.action == "show":
            w, refs = store.info(args.writer)
            print(f"writer {w.writer}: {w.n_references} reference(s), enrolled {when(w.created)}, updated {when(w.updated)}, "
                  f"{_spread_text(w.stats)}")
            for r in refs:
                print(f"  #{r.id}  {r.source}  sha256 {r.sha256[:12]}  added {when(r.added)}")
        else:
            n = store.delete(args.writer)
            print(f"deleted writer {args.writer} and {n} reference(s) from {args.store}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", default="bromley", choices=["bromley", "extended", "kinematic", "rich", "rich_xy"], help="feature set (default: bromley)")
    p.add_argument("--n-steps", type=int, default=200, help="fixed number of time steps (default: 200, as in Bromley et al.)")
    p.add_argument("--variable-length", action="store_true", help="resample at 100 Hz instead of to a fixed length")


STRATEGIES = ("mean", "nearest", "centroid", "gaussian", "wnorm", "mean_offset", "nearest_offset")  # verifier.STRATEGIES, without importing torch for --help


def _add_training_args(p: argparse.ArgumentParser, seed_help: str) -> None:
    p.add_argument("--preset", choices=["modern", "bromley"],
                   help="encoder preset (default: modern, trained on the 12 rich time functions, which need pressure; "
                        "bromley: Fig. 1 of the 1994 paper on its 8 features)")
    p.add_argument("--loss", choices=["contrastive", "contrastive_squared", "bromley", "template"],
                   help="training loss: template (default: episodes scored like verification; see README, Training) or a pair loss")
    p.add_argument("--distance", choices=["cosine", "euclidean", "dtw"],
                   help="comparison: dtw (soft-DTW of the frames of the default pooling) or, for an encoder that pools time away, cosine (its default) or euclidean (the single-vector encoder of earlier versions: --set model.pooling=stats --set features.n_steps=200)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: 34, or 40 for an encoder that pools time away; early stopping on validation EER)")
    p.add_argument("--seed", type=int, help=seed_help)
    p.add_argument("--config", help="TOML or JSON config file with sections [features], [model], [train]")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set train.lr=0.0005 --set features.n_steps=200 (resample to 200 steps), or "
                        "--set features.feature_set=bromley for recordings without pressure (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdnn-siamese",
        description="Online signature verification with Siamese time-delay neural networks (Bromley et al. 1994).",
        epilog="Exit codes: 0 success, 2 error, 130 interrupted; verify: 0 all accepted, 1 any rejected, 2 error. "
        "Formats and corpora: see data/README.md.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-v) or details (-vv) to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("synth", help="write a synthetic corpus (sigma-lognormal writers, genuines and skilled forgeries)")
    p.add_argument("--out", required=True, help="output folder (CSV files and manifest.csv)")
    p.add_argument("--writers", type=int, default=20, help="number of writers (default: 20)")
    p.add_argument("--genuine", type=int, default=10, help="genuine signatures per writer, half in each session (default: 10)")
    p.add_argument("--skilled", type=int, default=10, help="skilled forgeries per writer (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("inspect", help="read a signature file or a corpus, check it and summarise its features")
    p.add_argument("path", help="a signature file (.txt SVC2004, .csv, .tsv, .json), a corpus folder or a manifest.csv")
    _add_feature_args(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", help="train a Siamese TDNN on a corpus; writes model.pt and metrics.csv",
                       description="Train a Siamese TDNN. Settings come from --config (TOML or JSON with sections "
                       "[features], [model], [train]), then the shortcut flags, then --set, later wins. Training starts from "
                       "random weights; --set train.init=synthetic starts from the model pre-trained on synthetic writers "
                       "that ships in data/pretrained/ (default architecture and features only). The default model is an "
                       "ensemble of two encoders (model.members=2): both train at once, each a run of its own under "
                       "OUT/members/, then are validated together into OUT/model.pt; --set model.members=1 trains one.")
    p.add_argument("--data", required=True, help="corpus: SVC2004 folder, folder with manifest.csv, or the manifest")
    p.add_argument("--out", required=True, help="run folder (model.pt, metrics.csv, config.json; train_state.pt, or members/ "
                   "for an ensemble)")
    _add_training_args(p, "seed of the writer split, initial weights and pairs (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out with its saved settings")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a corpus with a protocol; write scores.csv, report.json/.md, far_frr.png, det.png",
                       description="Run the S_k protocol on a corpus with a trained model (--model) or the DTW baseline "
                       "(--method dtw) and write the report. Evaluate on writers the model was not trained on.")
    p.add_argument("--model", help="model file (model.pt from train); needed for --method tdnn")
    p.add_argument("--method", choices=["tdnn", "dtw"], default="tdnn", help="tdnn (default) or the DTW baseline")
    p.add_argument("--data", required=True, help="corpus: SVC2004 folder, folder with manifest.csv, or the manifest")
    p.add_argument("--protocol", default="S05", help="S_k: k references per writer (default: S05)")
    p.add_argument("--draws", type=int, default=1, help="repeat with this many random reference draws, each among the genuine signatures of the "
                   "sessions the first k come from (default: 1 = the first k)")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference draws (default: 0)")
    p.add_argument("--strategy", choices=STRATEGIES, help="scoring strategy (default: the model's)")
    p.add_argument("--out", required=True, help="report folder (must not hold a report already)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("experiment", help="writer-disjoint cross-validation: train on k-1 folds, evaluate the held-out fold",
                       description="Cross-validated experiment. For --method tdnn each fold trains a model on the other folds "
                       "(validation writers taken from them) and scores the held-out writers; --method dtw only scores; --method fusion "
                       "trains as tdnn and fuses each fold's TDNN with DTW by a logistic fit on its validation writers. "
                       "Training settings as for train (--config, --set, shortcut flags).")
    p.add_argument("--data", required=True, help="corpus: SVC2004 folder, folder with manifest.csv, or the manifest")
    p.add_argument("--method", choices=["tdnn", "dtw", "fusion"], default="tdnn",
                   help="tdnn (default), dtw, or fusion: each fold's TDNN and DTW combined by a logistic fit on its validation writers "
                        "(reported apart from the TDNN alone)")
    p.add_argument("--folds", type=int, default=4, help="number of writer-disjoint folds (default: 4)")
    p.add_argument("--protocol", default="S05", help="S_k, or several separated by commas, each reported in its own "
                   "subfolder (default: S05; e.g. S05,S10)")
    p.add_argument("--draws", type=int, default=1, help="random reference draws per writer, each among the genuine signatures of the sessions "
                   "the first k come from (default: 1 = the first k)")
    p.add_argument("--out", required=True, help="experiment folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment in --out")
    _add_training_args(p, "seed of the folds, reference draws and training (default: 0)")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("enroll", help="enroll a writer: embed reference signatures into a template store",
                       description="Embed reference signatures with a model and add them to a writer's template in an "
                       "SQLite store (created if new). All files must be usable, or nothing is enrolled.")
    p.add_argument("--model", required=True, help="model file (model.pt from train)")
    p.add_argument("--store", required=True, help="template store file (SQLite), created if missing")
    p.add_argument("--writer", required=True, help="writer name")
    p.add_argument("--replace", action="store_true", help="replace the writer's references instead of adding to them")
    p.add_argument("files", nargs="+", metavar="FILE", help="reference signature files")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("verify", help="genuine or forgery: score query signatures against a writer",
                       description="Score each query against an enrolled writer (--store S --writer W) or against "
                       "reference files given directly (--references REF... -- FILE...). Accept when score >= threshold. "
                       "Prints FILE  genuine|forgery  score  threshold per query.",
                       epilog="Exit codes: 0 every query accepted as genuine, 1 any rejected, 2 an error (like grep).")
    p.add_argument("--model", required=True, help="model file (model.pt from train)")
    p.add_argument("--store", help="template store file")
    p.add_argument("--writer", help="enrolled writer to verify against (with --store)")
    p.add_argument("--references", nargs="+", metavar="REF", help="reference files instead of a store; end the list with --")
    p.add_argument("--strategy", choices=STRATEGIES,
                   help="scoring strategy (default: the model's, chosen on validation writers)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="explicit decision threshold")
    g.add_argument("--far", type=float, help="threshold at this false-accept rate on the model's validation forgeries, e.g. 0.01")
    p.add_argument("--json", action="store_true", help="print JSON instead of one line per query")
    p.add_argument("files", nargs="*", metavar="FILE", help="query signature files")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("store", help="list, show or delete writers of a template store")
    p.add_argument("action", choices=["list", "show", "delete"])
    p.add_argument("--store", required=True, help="template store file")
    p.add_argument("--writer", help="writer (for show and delete)")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("demo", help="the whole job on a corpus (default: the bundled sample): train, evaluate, enroll, verify",
                       description="Check and preprocess a corpus, train a Siamese TDNN on two thirds of its writers, evaluate "
                       "the held-out third with S05 (report and plots), enroll one held-out writer and verify one genuine "
                       "signature and one forgery.")
    p.add_argument("--data", default="data/sample", help="corpus folder (default: data/sample)")
    p.add_argument("--out", help="output folder (default: runs/demo-DATE-TIME; never overwritten)")
    p.add_argument("--epochs", type=int, default=5,
                   help="training epochs at most (default: 5: the sample's validation EER is 0%% within them; each takes about 35 s on 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the writer split and training (default: 0)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tdnn-siamese``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
