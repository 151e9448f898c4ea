import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tdnn_siamese.cli import main
from tdnn_siamese.formats import write_signature

from .conftest import make_signature

SCRIPT = Path(sys.executable).with_name("tdnn-siamese")


def run(*args):
    return subprocess.run([sys.executable, "-m", "tdnn_siamese", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_module_and_console_script_start():
    r = run("--help")
    assert r.returncode == 0 and "synth" in r.stdout and "Exit codes" in r.stdout
    if not SCRIPT.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    r = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "inspect" in r.stdout


def test_synth_then_inspect(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "c"), "--writers", "2", "--genuine", "4", "--skilled", "2", "--seed", "3"]) == 0
    assert main(["inspect", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "12 files, 2 writers, 8 genuine, 4 skilled" in out
    assert "200 steps x 8 channels" in out
    assert main(["inspect", str(tmp_path / "c" / "synth0001" / "g01.csv"), "--features", "extended"]) == 0
    assert "13 channels" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "c" / "synth0001" / "g01.csv"), "--features", "rich", "--variable-length"]) == 0
    assert "12 channels" in capsys.readouterr().out


def test_inspect_offers_every_feature_set():
    from tdnn_siamese import cli
    from tdnn_siamese.features import FEATURE_SETS

    p = argparse.ArgumentParser()
    cli._add_feature_args(p)
    choices = next(a.choices for a in p._actions if a.dest == "features")
    assert sorted(choices) == sorted(FEATURE_SETS)


def test_bad_file_gives_one_line_and_exit_2(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("3\n1 2 3 1\n1 2 x 1\n1 2 5 1\n")
    r = run("inspect", p)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {p}, line 3: column 't' is not a number: 'x'"


def test_corpus_with_a_bad_file_lists_it_and_fails(tmp_path, capsys):
    write_signature(make_signature(seed=1), tmp_path / "good.csv")
    (tmp_path / "bad.csv").write_text("t,x,y\n1,2,3\n")
    (tmp_path / "manifest.csv").write_text("path,writer,label\ngood.csv,w,genuine\nbad.csv,w,genuine\n")
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv: only 1 points" in err and "1 file(s) could not be used" in err


@pytest.mark.parametrize("args,message", [
    (["inspect", "/no/such/folder"], "no such folder"),
    (["synth", "--out", "x", "--writers", "0"], "--writers must be at least 1"),
])
def test_user_errors(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err

