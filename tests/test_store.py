"""The SQLite template store: round trip, one transaction per change, concurrent writers, SIGKILL, wrong models."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from tdnn_siamese.store import StoreError, TemplateStore

FP, OTHER = "a" * 64, "b" * 64


def emb(k, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(k, d)).astype(np.float32)


def test_add_list_show_delete_round_trip(tmp_path):
    path = tmp_path / "s.db"
    e = emb(3)
    with TemplateStore(path, FP) as s:
        assert s.add("alice", e, ["a1", "a2", "a3"], ["h1", "h2", "h3"]) == 3
        assert s.add("bob", emb(2, seed=1), ["b1", "b2"], ["g1", "g2"]) == 2
    with TemplateStore(path, FP, create=False) as s:
        np.testing.assert_array_equal(s.template_embeddings("alice"), e)  # float32 blobs, bit-exact
        assert [(w.writer, w.n_references) for w in s.writers()] == [("alice", 3), ("bob", 2)]
        info, refs = s.info("alice")
        assert [r.source for r in refs] == ["a1", "a2", "a3"] and info.stats["references"] == 3
        assert "spread" not in info.stats  # a store alone does not know its model's distance
        assert s.meta()["model_fingerprint"] == FP and s.meta()["embedding_dim"] == "8"
        assert s.delete("alice") == 3
        with pytest.raises(StoreError, match="'alice' is not enrolled \\(enrolled: bob\\)"):
            s.template_embeddings("alice")
        with pytest.raises(StoreError, match="not enrolled"):
            s.delete("alice")
        assert s.db_integrity() == "ok"


def test_adding_skips_known_content_and_replace_starts_over(tmp_path):
    with TemplateStore(tmp_path / "s.db", FP) as s:
        s.add("w", emb(2), ["x", "y"], ["h1", "h2"])
        assert s.add("w", emb(2, seed=1), ["y-again", "z"], ["h2", "h3"]) == 1
        assert s.sources("w") == ["x", "y", "z"]
        assert s.add("w", emb(1, seed=2), ["new"], ["h9"], replace=True) == 1
        assert s.sources("w") == ["new"]
        np.testing.assert_array_equal(s.template_embeddings("w"), emb(1, seed=2))


def test_bad_enrollments_change_nothing(tmp_path):
    with TemplateStore(tmp_path / "s.db", FP) as s:
        s.add("w", emb(2), ["x", "y"], ["h1", "h2"])
        bad = emb(2, seed=3)
        bad[1, 0] = np.nan
        with pytest.raises(StoreError, match="not finite"):
            s.add("w", bad, ["p", "q"], ["h3", "h4"])
        with pytest.raises(StoreError, match="holds 8-d embeddings, not 4-d"):
            s.add("v", emb(1, d=4), ["p"], ["h5"])
        with pytest.raises(StoreError, match="at least one reference"):
            s.add("v", np.empty((0, 8), np.float32), [], [])
        assert [w.writer for w in s.writers()] == ["w"] and s.sources("w") == ["x", "y"]


def test_a_store_made_by_another_model_is_refused(tmp_path):
    path = tmp_path / "s.db"
    with TemplateStore(path, FP) as s:
        s.add("w", emb(2), ["x", "y"], ["h1", "h2"])
    with pytest.raises(StoreError, match="made with another model \\(fingerprint aaaaaaaaaaaa, this model bbbbbbbbbbbb\\)"):
        TemplateStore(path, OTHER)
    with TemplateStore(path, None, create=False) as s:  # listing needs no model
        assert s.writers()[0].n_references == 2
        with pytest.raises(StoreError, match="without a model"):
            s.add("v", emb(1), ["p"], ["h"])


def test_foreign_and_broken_files_are_refused_and_left_alone(tmp_path):
    foreign = tmp_path / "other.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a tdnn-siamese template store"):
        TemplateStore(foreign, FP)
    assert foreign.read_bytes() == before
    text = tmp_path / "notes.txt"
    text.write_text("hello " * 1000)
    with pytest.raises(StoreError, match="not a readable template store"):
        TemplateStore(text, FP)
    assert text.read_text() == "hello " * 1000
    with pytest.raises(StoreError, match="no such template store"):
        TemplateStore(tmp_path / "missing.db", FP, create=False)
    with pytest.raises(StoreError, match="no such template store"):
        TemplateStore(tmp_path / "missing.db", None)
    assert not (tmp_path / "missing.db").exists()


_ENROLLER = textwrap.dedent("""
    import os, sys, time, numpy as np
    from tdnn_siamese.store import TemplateStore
    path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    while not os.path.exists(path + ".go"):  # start together
        time.sleep(0.001)
    t0 = time.time()
    for i in range(n):
        with TemplateStore(path, "a" * 64) as s:
            e = np.full((3, 8), i, np.float32)
            s.add(f"{prefix}{i}", e, ["r1", "r2", "r3"], [f"{prefix}{i}-{j}" for j in range(3)])
    print(t0, time.time())
""")


def test_two_processes_enrolling_at_once_both_succeed(tmp_path):
    path = tmp_path / "s.db"
    procs = [subprocess.Popen([sys.executable, "-c", _ENROLLER, str(path), p, "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for p in "xy"]
    (tmp_path / "s.db.go").touch()
    spans = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        spans.append([float(v) for v in out.split()])
    assert max(a for a, _ in spans) < min(b for _, b in spans), f"the two enrollments did not overlap: {spans}"
    with TemplateStore(path, FP, create=False) as s:
        ws = s.writers()
        assert len(ws) == 200 and all(w.n_references == 3 for w in ws)
        np.testing.assert_array_equal(s.template_embeddings("y99"), np.full((3, 8), 99, np.float32))


_KILLED = textwrap.dedent("""
    import sys, time, numpy as np
    import tdnn_siamese.store as st
    real, calls = st._blob, []
    def slow_blob(e):  # pause inside the enrollment's transaction, after the first reference is written
        calls.append(1)
        if len(calls) == 2:
            print("inside", flush=True)
            time.sleep(60)
        return real(e)
    st._blob = slow_blob
    with st.TemplateStore(sys.argv[1], "a" * 64) as s:
        s.add("victim", np.ones((4, 8), np.float32), ["a", "b", "c", "d"], ["1", "2", "3", "4"])
""")


def test_sigkill_during_enrollment_leaves_the_writer_absent_and_the_store_readable(tmp_path):
    path = tmp_path / "s.db"
    with TemplateStore(path, FP) as s:
        s.add("kept", emb(2), ["x", "y"], ["h1", "h2"])
    p = subprocess.Popen([sys.executable, "-c", _KILLED, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "inside"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    with TemplateStore(path, FP) as s:
        assert s.db_integrity() == "ok"
        assert [w.writer for w in s.writers()] == ["kept"]
        np.testing.assert_array_equal(s.template_embeddings("kept"), emb(2))
        s.add("victim", np.ones((4, 8), np.float32), ["a", "b", "c", "d"], ["1", "2", "3", "4"])  # the lock is free again
        assert s.writers()[1].n_references == 4


def test_opening_waits_while_another_process_writes_the_store(tmp_path):
    """Switching to write-ahead logging needs an exclusive lock; SQLite refuses it at once (no busy wait) while
    another connection is about to write, so the store must retry, not fail with "database is locked" (seen in CI when two
    processes opened a new store together)."""
    path = tmp_path / "s.db"
    TemplateStore(path, FP).close()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    assert other.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"  # as a first opener finds a new file
    other.execute("BEGIN IMMEDIATE")  # holds the reserved (write) lock, as another opener creating the schema does
    timer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    timer.start()
    try:
        t0 = time.monotonic()
        with TemplateStore(path, FP, timeout=5) as s:
            assert s.writers() == []
        assert time.monotonic() - t0 >= 0.25
    finally:
        timer.join()
        other.close()


def test_spread_is_recorded_in_the_distance_given(tmp_path):
    e = emb(3)
    with TemplateStore(tmp_path / "s.db", FP) as s:
        s.add("alice", e[:1], ["a1"], ["h1"], spread=("euclidean", lambda x: float(np.linalg.norm(x[0] - x[-1])) if len(x) > 1 else None))
        assert s.info("alice")[0].stats == {"references": 1, "spread": None, "spread_distance": "euclidean"}
        s.add("alice", e[1:], ["a2", "a3"], ["h2", "h3"], spread=("euclidean", lambda x: float(np.linalg.norm(x[0] - x[-1]))))
        stats = s.info("alice")[0].stats  # over all three references, not just the two added
        assert stats["references"] == 3 and abs(stats["spread"] - float(np.linalg.norm(e[0] - e[2]))) < 1e-5


def test_store_show_text_says_what_the_spread_is():
    from tdnn_siamese.cli import _spread_text

    assert _spread_text({"references": 3, "spread": 0.25, "spread_distance": "dtw"}) == "reference spread (mean pairwise dtw distance) 0.2500"
    assert "n/a (one reference)" in _spread_text({"references": 1, "spread": None, "spread_distance": "dtw"})
    assert "from an older version" in _spread_text({"references": 3, "mean_pairwise_cosine_distance": 0.1})
    assert "not recorded" in _spread_text({"references": 4})
