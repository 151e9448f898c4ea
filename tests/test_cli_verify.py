"""`tdnn-siamese enroll | verify | store`: output, grep-style exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

from tdnn_siamese import verifier
from tdnn_siamese.cli import main

from .conftest import SAMPLE, SMALL_TRAIN

W = SAMPLE / "synth0001"
REFS = [str(W / f"g0{i}.csv") for i in range(1, 6)]
GEN = [str(W / f"g0{i}.csv") for i in range(6, 10)]
SKL = [str(W / f"s0{i}.csv") for i in range(1, 4)]


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_enroll_then_verify_prints_one_line_per_query_and_exits_like_grep(sample_model, tmp_path, capsys):
    store = tmp_path / "s.db"
    rc, out, _ = run(capsys, "enroll", "--model", sample_model, "--store", store, "--writer", "w1", *REFS)
    assert rc == 0 and "enrolled 5 reference(s) for writer w1" in out
    # a threshold below every score accepts all: exit 0
    rc, out, _ = run(capsys, "verify", "--model", sample_model, "--store", store, "--writer", "w1", "--threshold=-1e9", *GEN)
    lines = out.splitlines()
    assert rc == 0 and len(lines) == len(GEN)
    for line, f in zip(lines, GEN):
        path, decision, score, threshold = line.split("  ")
        assert path == f and decision == "genuine" and float(score) >= float(threshold) == -1e9
    # the model's own threshold: JSON with every field; forgeries and genuines separated on average
    rc, out, _ = run(capsys, "verify", "--model", sample_model, "--store", store, "--writer", "w1", "--json", *GEN, *SKL)
    doc = json.loads(out)
    assert doc["writer"] == "w1" and doc["references"] == 5 and doc["errors"] == []
    res = doc["results"]
    assert [r["file"] for r in res] == GEN + SKL
    assert all(r["accepted"] == (r["score"] >= doc["threshold"]) and r["decision"] == ("genuine" if r["accepted"] else "forgery") for r in res)
    gen_mean = sum(r["score"] for r in res[:4]) / 4
    assert gen_mean > sum(r["score"] for r in res[4:]) / 3
    assert rc == (0 if all(r["accepted"] for r in res) else 1)
    # a threshold above every score rejects: exit 1
    rc, out, _ = run(capsys, "verify", "--model", sample_model, "--store", store, "--writer", "w1", "--threshold", "1e9", GEN[0])
    assert rc == 1 and out.split("  ")[1] == "forgery"


def test_verify_against_reference_files_without_a_store(sample_model, tmp_path, capsys):
    store = tmp_path / "s.db"
    run(capsys, "enroll", "--model", sample_model, "--store", store, "--writer", "w1", *REFS)
    _, via_store, _ = run(capsys, "verify", "--model", sample_model, "--store", store, "--writer", "w1", "--strategy", "wnorm", *GEN)
    rc, direct, _ = run(capsys, "verify", "--model", sample_model, "--strategy", "wnorm", "--references", *REFS, "--", *GEN)
    assert rc in (0, 1) and direct == via_store
    rc, out, _ = run(capsys, "verify", "--model", sample_model, "--far", "0", "--json", "--references", *REFS, "--", *SKL)
    doc = json.loads(out)
    assert doc["threshold_from"].startswith("FAR 0") and doc["strategy"] in verifier.STRATEGIES


@pytest.mark.parametrize("case, message", [
    ("unknown writer", "writer 'nobody' is not enrolled (enrolled: w1)"),
    ("missing store", "no such template store"),
    ("no queries after references", "no query files (after --references REF..., put the queries after --)"),
    ("store and references", "give either --store S --writer W, or --references"),
    ("unreadable reference", "nothing enrolled for writer 'w2'"),
    ("bad strategy for one reference", "needs at least 2 references"),
    ("positional strategy for frames", "cannot score a model compared by dtw distance"),
])
def test_errors_are_one_line_and_exit_2(case, message, sample_model, tmp_path, capsys):
    store = tmp_path / "s.db"
    assert run(capsys, "enroll", "--model", sample_model, "--store", store, "--writer", "w1", *REFS)[0] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("t,x,y\n1,2\n")
    args = {
        "unknown writer": ["verify", "--model", sample_model, "--store", store, "--writer", "nobody", GEN[0]],
        "missing store": ["verify", "--model", sample_model, "--store", tmp_path / "none.db", "--writer", "w1", GEN[0]],
        "no queries after references": ["verify", "--model", sample_model, "--references", *REFS],
        "store and references": ["verify", "--model", sample_model, "--store", store, "--writer", "w1", "--references", REFS[0], "--", GEN[0]],
        "unreadable reference": ["enroll", "--model", sample_model, "--store", store, "--writer", "w2", REFS[0], bad],
        "bad strategy for one reference": ["verify", "--model", sample_model, "--strategy", "wnorm", "--references", REFS[0], "--", GEN[0]],
        "positional strategy for frames": ["verify", "--model", sample_model, "--strategy", "gaussian", "--references", *REFS, "--", GEN[0]],
    }[case]
    rc, out, err = run(capsys, *args)
    assert rc == 2 and message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    if case == "unreadable reference":
        assert f"{bad}, line" in err
        assert run(capsys, "store", "list", "--store", store)[1].count("reference(s)") == 1  # w2 was not enrolled


def test_an_unreadable_query_is_reported_while_the_others_are_answered(sample_model, capsys):
    rc, out, err = run(capsys, "verify", "--model", sample_model, "--threshold=-1e9", "--references", *REFS, "--", GEN[0], "/no/such.csv")
    assert rc == 2 and out.startswith(GEN[0]) and "error: /no/such.csv: cannot read file" in err


def test_a_store_made_with_another_model_is_refused(sample_model, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", "--data", str(SAMPLE), "--out", str(other), "--epochs", "1", "--seed", "7", *SMALL_TRAIN]) == 0
    store = tmp_path / "s.db"
    run(capsys, "enroll", "--model", sample_model, "--store", store, "--writer", "w1", *REFS)
    for cmd in (["verify", "--writer", "w1", GEN[0]], ["enroll", "--writer", "w2", *REFS]):
        rc, _, err = run(capsys, cmd[0], "--model", other / "model.pt", "--store", store, *cmd[1:])
        assert rc == 2 and "made with another model" in err and "enroll into a new store" in err


def test_store_list_show_delete(sample_model, tmp_path, capsys):
    store = tmp_path / "s.db"
    run(capsys, "enroll", "--model", sample_model, "--store", store, "--writer", "w1", *REFS[:3])
    rc, out, _ = run(capsys, "enroll", "--model", sample_model, "--store", store, "--writer", "w1", *REFS)
    assert rc == 0 and "enrolled 2 reference(s) for writer w1" in out and "(5 in all)" in out
    rc, out, _ = run(capsys, "store", "list", "--store", store)
    assert rc == 0 and "1 writer(s)" in out and "w1  5 reference(s)" in out
    rc, out, _ = run(capsys, "store", "show", "--store", store, "--writer", "w1")
    assert rc == 0 and out.count("sha256") == 5 and REFS[4] in out
    from tdnn_siamese.formats import read_signature
    from tdnn_siamese.store import TemplateStore
    from tdnn_siamese.verifier import Verifier

    v = Verifier.from_checkpoint(sample_model)  # the spread is the model's own distance among all 5 references
    with TemplateStore(store, None, create=False) as s:
        stored = s.template_embeddings("w1")
    expected = v.spread(v.embed([read_signature(r) for r in REFS]))
    assert expected > 0 and abs(v.spread(stored) - expected) < 1e-4
    assert f"reference spread (mean pairwise {v.distance.kind} distance) {expected:.4f}" in out
    rc, out, _ = run(capsys, "store", "delete", "--store", store, "--writer", "w1")
    assert rc == 0 and "deleted writer w1 and 5 reference(s)" in out
    rc, _, err = run(capsys, "store", "show", "--store", store, "--writer", "w1")
    assert rc == 2 and "not enrolled" in err


def test_two_enroll_commands_at_once_both_succeed(sample_model, tmp_path):
    store = tmp_path / "s.db"
    cmd = lambda w, refs: [sys.executable, "-m", "tdnn_siamese", "enroll", "--model", str(sample_model), "--store", str(store),  # noqa: E731
                           "--writer", w, *refs]
    procs = [subprocess.Popen(cmd("a", REFS), stderr=subprocess.PIPE, text=True),
             subprocess.Popen(cmd("b", [str(SAMPLE / "synth0002" / f"g0{i}.csv") for i in range(1, 6)]), stderr=subprocess.PIPE, text=True)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    out = subprocess.run([sys.executable, "-m", "tdnn_siamese", "store", "list", "--store", str(store)], capture_output=True, text=True).stdout
    assert "a  5 reference(s)" in out and "b  5 reference(s)" in out


def test_the_cli_offers_every_scoring_strategy():
    from tdnn_siamese import cli, verifier

    assert cli.STRATEGIES == verifier.STRATEGIES


def test_verifying_imports_neither_pandas_nor_scipy(sample_model):
    """A verification's start-up is torch's import and little else (issue #6: CLI cold start)."""
    refs = [str(W / f"g0{i}.csv") for i in range(1, 6)]
    code = ("import sys; from tdnn_siamese.cli import main; "
            f"rc = main(['verify', '--model', {str(sample_model)!r}, '--references', *{refs!r}, '--', {str(W / 'g06.csv')!r}]); "
            "heavy = sorted(m for m in ('pandas', 'scipy', 'matplotlib', 'dtaidistance') if m in sys.modules); "
            "print(rc, heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rc, heavy = r.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc in ("0", "1") and heavy == "[]"  # a decision was made (accepted or rejected), with none of them loaded
