"""Score tables to reports: figures, missing classes, draws, files; the evaluate, experiment and demo commands."""

import json

import numpy as np
import pandas as pd
import pytest

from tdnn_siamese import datasets
from tdnn_siamese.cli import main
from tdnn_siamese.evaluate import report, write_report
from tdnn_siamese.metrics import eer, summary, writer_specific_eer

from .conftest import SAMPLE, SMALL_TRAIN

SYNTH_INIT = ["--set", "train.init=synthetic"]  # the shipped pre-trained model (too small a model to fit it: random weights)


def score_table(seed=0, skilled=True, draw=None):
    rng = np.random.default_rng(seed)
    rows = []
    for w in ("a", "b", "c"):
        rows += [(w, f"{w}g{i}", "genuine", rng.normal(1.0, 0.5)) for i in range(6)]
        if skilled:
            rows += [(w, f"{w}s{i}", "skilled", rng.normal(0.3, 0.5)) for i in range(5)]
        rows += [(w, f"{o}g0", "random", rng.normal(-1.0, 0.5)) for o in ("a", "b", "c") if o != w]
    t = pd.DataFrame(rows, columns=["writer", "query", "kind", "score"])
    if draw is not None:
        t["draw"] = draw
    return t


def test_report_figures_equal_the_metric_functions():
    t = score_table()
    t["threshold"] = 0.5
    rep = report(t, {"method": "x"})
    g = t[t.kind == "genuine"].score
    for kind in ("skilled", "random"):
        i = t[t.kind == kind].score
        r = rep["results"][kind]
        assert r["global"] == summary(g, i)
        both = t[t.kind.isin(["genuine", kind])]
        assert r["writer_specific"]["eer"] == pytest.approx(writer_specific_eer(both.writer, both.kind == "genuine", both.score)[0])
        assert r["calibrated"] == {"far": float(np.mean(i >= 0.5)), "frr": float(np.mean(g < 0.5))}
    assert rep["trials_per_draw"] == {"genuine": 18, "skilled": 15, "random": 6} and rep["method"] == "x"


def test_per_writer_eers_are_reported_and_the_worst_named():
    t = score_table()
    t.loc[(t.writer == "b") & (t.kind == "skilled"), "score"] = 5.0  # every skilled forgery of b beats its genuines
    rep = report(t)
    per = rep["results"]["skilled"]["writer_specific"]["per_writer"]
    for w in ("a", "b", "c"):
        sub = t[(t.writer == w) & t.kind.isin(["genuine", "skilled"])]
        assert per[w] == eer(sub[sub.kind == "genuine"].score, sub[sub.kind == "skilled"].score)[0]
    assert per["b"] == 1.0 and rep["results"]["skilled"]["writer_specific"]["eer"] == pytest.approx(np.mean(list(per.values())))
    from tdnn_siamese.evaluate import markdown
    line = next(x for x in markdown(rep).splitlines() if x.startswith("- skilled forgeries, writers with the highest own EER"))
    assert line.split(": ", 1)[1].startswith("b 100.00%")
    assert f"{sum(e == 0 for e in per.values())} of 3 writers at 0%" in line


def test_the_worst_writers_line_lists_five_failing_writers_and_counts_the_perfect_ones(tmp_path):
    rows = []
    for n, w in enumerate("abcdefgh"):  # writer a: 0 forgeries above its genuines; b-h: 1..7 of 10 above (EER rises)
        rows += [(w, f"{w}g{i}", "genuine", 1.0 + i) for i in range(10)]
        rows += [(w, f"{w}s{i}", "skilled", 20.0 if i < n else -5.0) for i in range(10)]
    t = pd.DataFrame(rows, columns=["writer", "query", "kind", "score"])
    rep = report(t)
    per = rep["results"]["skilled"]["writer_specific"]["per_writer"]
    assert per["a"] == 0.0 and all(per[w] > 0 for w in "bcdefgh") and per["h"] > per["g"] > per["b"]
    from tdnn_siamese.evaluate import markdown
    line = next(x for x in markdown(rep).splitlines() if x.startswith("- skilled forgeries"))
    named = [item.split()[0] for item in line.split(": ", 1)[1].split(";")[0].split(", ")]
    assert named == ["h", "g", "f", "e", "d"] and line.endswith("1 of 8 writers at 0%.")  # the five worst, worst first; a left out
    paths = write_report(tmp_path, t, rep)
    assert json.loads(paths["report.json"].read_text())["results"]["skilled"]["writer_specific"]["per_writer"] == per


def test_a_missing_class_is_reported_as_not_available():
    rep = report(score_table(skilled=False))
    assert rep["results"]["skilled"] is None and rep["results"]["random"]["global"]["eer"] >= 0
    assert rep["trials_per_draw"]["skilled"] == 0


def test_draws_are_averaged_with_their_spread():
    t = pd.concat([score_table(1, draw=0), score_table(2, draw=1)], ignore_index=True)
    rep = report(t)
    e = [eer(d[d.kind == "genuine"].score, d[d.kind == "skilled"].score)[0] for _, d in t.groupby("draw")]
    assert rep["draws"] == 2 and rep["results"]["skilled"]["global"]["eer"] == pytest.approx(np.mean(e))
    assert rep["results_std_over_draws"]["skilled"]["global"]["eer"] == pytest.approx(np.std(e))
    assert rep["trials_per_draw"]["genuine"] == 18
    per = {w: np.mean([eer(d[(d.writer == w) & (d.kind == "genuine")].score, d[(d.writer == w) & (d.kind == "skilled")].score)[0]
                       for _, d in t.groupby("draw")]) for w in "abc"}
    assert rep["results"]["skilled"]["writer_specific"]["per_writer"] == pytest.approx(per)  # each writer's EER, averaged over draws


def test_write_report_writes_every_file(tmp_path):
    t = score_table()
    rep = report(t, {"method": "tdnn", "protocol": "S05"})
    paths = write_report(tmp_path, t, rep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.png", "far_frr.png", "report.json", "report.md", "scores.csv"]
    back = pd.read_csv(paths["scores.csv"])
    assert back.columns.tolist() == ["writer", "query", "kind", "score"]
    np.testing.assert_allclose(back.score, t.score, rtol=1e-8)
    assert json.loads(paths["report.json"].read_text())["results"]["skilled"]["global"]["eer"] == rep["results"]["skilled"]["global"]["eer"]
    md = paths["report.md"].read_text()
    assert "| skilled |" in md and "| random |" in md and "writer-specific" in md
    for png in ("far_frr.png", "det.png"):
        assert paths[png].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[png].stat().st_size > 10_000


# --------------------------------------------------------------------------- commands


def test_evaluate_command_with_a_model_and_with_dtw(sample_model, tmp_path, capsys):
    assert main(["evaluate", "--model", str(sample_model), "--data", str(SAMPLE), "--out", str(tmp_path / "t")]) == 0
    out, err = capsys.readouterr()
    assert "skilled" in out and "report:" in out and "not a held-out test" in err  # the sample trained this model
    rep = json.loads((tmp_path / "t" / "report.json").read_text())
    assert rep["protocol"] == "S05" and rep["n_writers"] == 12 and rep["strategy"] and rep["threshold"] is not None
    assert "calibrated" in rep["results"]["skilled"]
    scores = pd.read_csv(tmp_path / "t" / "scores.csv")
    assert set(scores.kind) == {"genuine", "skilled", "random"} and np.isfinite(scores.score).all()
    assert main(["evaluate", "--method", "dtw", "--data", str(SAMPLE), "--protocol", "S03", "--draws", "2",
                 "--out", str(tmp_path / "d")]) == 0
    rep = json.loads((tmp_path / "d" / "report.json").read_text())
    assert rep["draws"] == 2 and rep["protocol"] == "S03" and "results_std_over_draws" in rep
    assert "or 2 random draws of 3 drawn among the genuine signatures of the sessions" in rep["protocol_text"]
    assert pd.read_csv(tmp_path / "d" / "scores.csv").columns.tolist() == ["writer", "query", "kind", "score", "draw"]


@pytest.mark.parametrize("args, message", [
    (["--method", "dtw", "--protocol", "S5x"], "unknown protocol"),
    (["--method", "dtw", "--protocol", "S20"], "no writer has 20 genuine signatures"),
    (["--method", "tdnn"], "needs --model"),
])
def test_evaluate_errors_are_one_line(args, message, tmp_path, capsys):
    assert main(["evaluate", "--data", str(SAMPLE), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_existing_report_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["evaluate", "--method", "dtw", "--data", str(SAMPLE), "--out", str(out)]) == 0
    before = (out / "report.json").read_bytes()
    assert main(["evaluate", "--method", "dtw", "--data", str(SAMPLE), "--out", str(out)]) == 2
    assert "already holds a report" in capsys.readouterr().err and (out / "report.json").read_bytes() == before


def test_an_unreadable_file_in_the_corpus_stops_the_evaluation(tmp_path, capsys):
    import shutil

    shutil.copytree(SAMPLE, tmp_path / "c")
    (tmp_path / "c" / "synth0002" / "g07.csv").write_text("t,x,y\n1,2,3\n")
    assert main(["evaluate", "--method", "dtw", "--data", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "1 file(s) of the protocol cannot be used" in err and "g07.csv" in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_experiment_on_the_sample_with_dtw_pools_every_fold(tmp_path, capsys):
    assert main(["experiment", "--method", "dtw", "--data", str(SAMPLE), "--folds", "3", "--protocol", "S05", "--out", str(tmp_path / "x")]) == 0
    scores = pd.read_csv(tmp_path / "x" / "scores.csv")
    assert sorted(scores.fold.unique()) == [1, 2, 3] and scores.writer.nunique() == 12
    for f, d in scores.groupby("fold"):  # random forgeries come from the same fold's writers
        assert set(d[d.kind == "random"]["query"].str.extract(r"(synth\d+)")[0]) <= set(d.writer)
    assert "experiment finished" in capsys.readouterr().out


@pytest.mark.slow
def test_experiment_with_tdnn_keeps_test_writers_out_of_training(tmp_path, capsys, monkeypatch):
    from tdnn_siamese.model import load_checkpoint

    out = tmp_path / "x"
    assert main(["experiment", "--method", "tdnn", "--data", str(SAMPLE), "--folds", "2", "--protocol", "S05", "--out", str(out),
                 "--epochs", "1", *SMALL_TRAIN, *SYNTH_INIT]) == 0
    scores = pd.read_csv(out / "scores.csv")
    for f in (1, 2):
        prov = load_checkpoint(out / f"fold{f}" / "run" / "model.pt").provenance
        test_writers = set(scores[scores.fold == f].writer)
        assert not test_writers & (set(prov["train_writers"]) | set(prov["val_writers"]))
        assert (scores[scores.fold == f]["threshold"] == scores[scores.fold == f]["threshold"].iloc[0]).all()
        d = scores[scores.fold == f]  # scores are the fold model's calibrated log-odds: an increasing map of the raw ones
        order = np.argsort(d["raw_score"].to_numpy(), kind="stable")
        assert (np.diff(d["score"].to_numpy()[order]) >= -1e-12).all() and d["score"].nunique() > 1
    rep = json.loads((out / "report.json").read_text())
    assert rep["folds"] == 2 and rep["training"]["train"]["epochs"] == 1 and "calibrated" in rep["results"]["skilled"]
    assert rep["training"]["train"]["init"] == "synthetic" and rep["initial_model"] == {"file": "", "sha256": ""}  # too small to fit it
    assert "- initial weights: random" in (out / "report.md").read_text()
    # resume: finished folds are read back, nothing retrained
    (out / "report.json").unlink()
    mtime = (out / "fold1" / "run" / "model.pt").stat().st_mtime
    assert main(["experiment", "--method", "tdnn", "--data", str(SAMPLE), "--folds", "2", "--out", str(out), "--resume",
                 "--epochs", "1", *SMALL_TRAIN, *SYNTH_INIT]) == 0
    assert (out / "fold1" / "run" / "model.pt").stat().st_mtime == mtime
    pd.testing.assert_frame_equal(pd.read_csv(out / "scores.csv"), scores)
    # resuming with other settings would pool two systems in one report: refused, naming the setting
    (out / "report.json").unlink()
    capsys.readouterr()
    assert main(["experiment", "--method", "tdnn", "--data", str(SAMPLE), "--folds", "2", "--out", str(out), "--resume",
                 "--epochs", "1", *SMALL_TRAIN, *SYNTH_INIT, "--set", "features.znorm=false"]) == 2
    err = capsys.readouterr().err
    assert "fold1: this finished fold was trained with other settings (features.znorm = True there, False now)" in err
    assert (out / "fold1" / "run" / "model.pt").stat().st_mtime == mtime
    # a damaged config.json of a finished fold: refused, naming the file and the way out, and nothing retrained
    config = out / "fold1" / "run" / "config.json"
    saved = config.read_text()
    config.write_text(saved[: len(saved) // 2])
    assert main(["experiment", "--method", "tdnn", "--data", str(SAMPLE), "--folds", "2", "--out", str(out), "--resume",
                 "--epochs", "1", *SMALL_TRAIN, *SYNTH_INIT]) == 2
    err = capsys.readouterr().err
    assert f"{config}: not a readable run configuration; remove {out / 'fold1'}" in err and "Traceback" not in err
    assert (out / "fold1" / "run" / "model.pt").stat().st_mtime == mtime
    config.write_text(saved)
    # the same settings, but train.init = "synthetic" now names a file these folds did not start from (here: a small
    # model trained on 4 of the sample's writers, standing in for a rebuilt data/pretrained/synthetic.pt): refused too
    from tdnn_siamese import datasets
    from tdnn_siamese import train as train_module

    table = datasets.load(SAMPLE)
    few = datasets.write_manifest(table[table.writer.isin(sorted(set(table.writer))[:4])].to_dict("records"),
                                  tmp_path / "few" / "manifest.csv")
    assert main(["train", "--data", str(few.parent), "--out", str(tmp_path / "other"), "--epochs", "1", *SMALL_TRAIN]) == 0
    monkeypatch.setattr(train_module, "PRETRAINED", tmp_path / "other" / "model.pt")
    capsys.readouterr()
    assert main(["experiment", "--method", "tdnn", "--data", str(SAMPLE), "--folds", "2", "--out", str(out), "--resume",
                 "--epochs", "1", *SMALL_TRAIN, *SYNTH_INIT]) == 2
    err = capsys.readouterr().err
    assert "fold1: this fold started from random weights, the folds to come would start from the file with SHA-256" in err
    assert (out / "fold1" / "run" / "model.pt").stat().st_mtime == mtime


@pytest.mark.slow
def test_demo_runs_the_whole_job(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    for step in ("192 files, 12 writers", "1/5", "2/5", "3/5", "4/5", "5/5", "demo finished"):
        assert step in out
    lines = [line for line in out.splitlines() if "(truth:" in line]
    assert len(lines) == 2 and all(line.split("  ")[1] in ("genuine", "forgery") for line in lines)
    for f in ("run/model.pt", "report/report.md", "report/far_frr.png", "report/det.png", "report/scores.csv", "templates.db",
              "run/members/m0/metrics.csv", "run/members/m1/model.pt"):  # the defaults: an ensemble of two
        assert (tmp_path / "demo" / f).is_file(), f
    assert "its members' kept epochs" in out
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2  # never overwritten


@pytest.mark.slow
def test_experiment_fusion_fits_on_validation_writers_and_combines_both_scores(tmp_path):
    """--method fusion: per fold, weights fitted on the model's validation writers only; fused = w . (tdnn, dtw) + b,
    and the TDNN and DTW columns are exactly what the two methods score alone."""
    from tdnn_siamese.model import load_checkpoint

    out = tmp_path / "f"
    assert main(["experiment", "--method", "fusion", "--data", str(SAMPLE), "--folds", "2", "--protocol", "S05", "--out", str(out),
                 "--epochs", "1", *SMALL_TRAIN]) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert {"score", "tdnn_score", "dtw_score"} <= set(scores.columns)
    assert main(["experiment", "--method", "dtw", "--data", str(SAMPLE), "--folds", "2", "--protocol", "S05", "--out", str(tmp_path / "d")]) == 0
    dtw = pd.read_csv(tmp_path / "d" / "scores.csv")
    np.testing.assert_allclose(scores["dtw_score"], dtw["score"], rtol=1e-7)
    for f in (1, 2):
        fit = json.loads((out / f"fold{f}" / "fusion-S05.json").read_text())
        prov = load_checkpoint(out / f"fold{f}" / "run" / "model.pt").provenance
        assert fit["validation_writers"] == sorted(prov["val_writers"])
        assert not set(scores[scores.fold == f].writer) & set(fit["validation_writers"])
        d = scores[scores.fold == f]
        np.testing.assert_allclose(d["score"], fit["w_tdnn"] * d["tdnn_score"] + fit["w_dtw"] * d["dtw_score"] + fit["bias"], rtol=1e-6, atol=1e-6)
    rep = json.loads((out / "report.json").read_text())
    assert rep["method"] == "fusion" and "dtw" in rep and "training" in rep and "fusion" in rep["protocol_text"]


def test_experiment_refuses_training_options_for_dtw(tmp_path, capsys):
    assert main(["experiment", "--method", "dtw", "--data", str(SAMPLE), "--folds", "2", "--out", str(tmp_path / "x"), "--loss", "template"]) == 2
    assert "training options apply to --method tdnn and fusion only" in capsys.readouterr().err


def test_experiment_checks_the_model_that_train_init_synthetic_resolves_to(tmp_path, capsys, sample_model, monkeypatch):
    """With ``train.init = "synthetic"`` the leakage check reads the shipped model file (here one trained on
    the sample itself, standing in for it): the same refusal as an explicit path."""
    from tdnn_siamese import train as train_module

    monkeypatch.setattr(train_module, "PRETRAINED", sample_model)
    assert main(["experiment", "--data", str(SAMPLE), "--folds", "2", "--out", str(tmp_path / "x"), *SMALL_TRAIN, *SYNTH_INIT]) == 2
    err = capsys.readouterr().err
    assert "was trained on this corpus" in err and str(sample_model) in err and "Traceback" not in err


def test_experiment_refuses_to_fine_tune_a_model_trained_on_the_same_corpus(tmp_path, capsys, sample_model):
    assert main(["experiment", "--data", str(SAMPLE), "--folds", "2", "--out", str(tmp_path / "x"), "--set", f"train.init={sample_model}"]) == 2
    err = capsys.readouterr().err
    assert "was trained on this corpus" in err and "Traceback" not in err


def test_a_repeated_draw_is_scored_once_and_copied():
    """score_protocols: a writer's draw with the references and queries of an earlier draw (its pool holds just k)
    reuses that draw's scores; the table is the same as scoring every draw; differing draws are all scored."""
    from tdnn_siamese.dtw import DTWVerifier
    from tdnn_siamese.evaluate import score_protocols
    from tdnn_siamese.protocols import sk_protocols

    class Counting(DTWVerifier):
        calls = 0

        def score_reps(self, template, reps):
            Counting.calls += 1
            return super().score_reps(template, reps)

    table = datasets.load(SAMPLE)
    n_writers = table.writer.nunique()
    same = sk_protocols(table, 5, 3, 0)  # the sample's writers have 5 genuine signatures in session 1: one possible draw
    scores = score_protocols(Counting(), table, same)
    assert Counting.calls == n_writers and scores.draw.nunique() == 3
    by_draw = [d.drop(columns="draw").reset_index(drop=True) for _, d in scores.groupby("draw")]
    pd.testing.assert_frame_equal(by_draw[0], by_draw[2])
    one = score_protocols(DTWVerifier(), table, same[:1])
    np.testing.assert_allclose(by_draw[1].score, one.score)
    Counting.calls = 0
    drawn = sk_protocols(table, 3, 3, 0)
    distinct = {(w, tuple(p.references[w])) for p in drawn for w in p.references}
    scores = score_protocols(Counting(), table, drawn)
    assert Counting.calls == len(distinct) > n_writers and len(scores) == sum(len(p.trials) for p in drawn)


def test_a_report_without_genuine_trials_says_so_rather_than_that_forgeries_are_missing(capsys):
    """S10 on writers with exactly 10 genuine signatures leaves no genuine query: the report and the printed table
    name the missing genuine trials (they said 'no skilled trials' while 72 skilled trials were there)."""
    from tdnn_siamese.cli import _print_table
    from tdnn_siamese.evaluate import markdown

    only_forgeries = pd.DataFrame({"writer": ["a", "a", "b"], "query": [1, 2, 3], "kind": ["skilled", "random", "skilled"],
                                   "score": [0.1, 0.2, 0.3]})
    rep = report(only_forgeries, {"method": "dtw", "protocol": "S10"})
    assert rep["results"].get("skilled") is None and rep["trials_per_draw"]["skilled"] == 2
    md = markdown(rep)
    assert "| skilled | n/a (no genuine trials) |" in md and "| random | n/a (no genuine trials) |" in md
    _print_table(rep)
    printed = capsys.readouterr().out
    assert "n/a (no genuine trials)" in printed and "no skilled trials" not in printed
    no_random = pd.DataFrame({"writer": ["a", "a", "b", "b"], "query": [1, 2, 3, 4], "kind": ["genuine", "skilled"] * 2,
                              "score": [0.9, 0.1, 0.8, 0.2]})
    md = markdown(report(no_random, {"method": "dtw", "protocol": "S05"}))
    assert "| random | n/a (no random trials) |" in md and "| skilled | n/a" not in md
