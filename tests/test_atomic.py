import json

import numpy as np
import pytest

from tdnn_siamese import atomic


def test_a_crash_while_writing_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old model")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_bytes(target, b"new model")
    assert target.read_bytes() == b"old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind


def test_json_is_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "report.json"
    atomic.atomic_write_json(target, {"eer": 0.25, "writers": ["001", "002"]})
    assert target.read_text().endswith("}\n")
    assert json.loads(target.read_text()) == {"eer": 0.25, "writers": ["001", "002"]}
    with pytest.raises(TypeError):
        atomic.atomic_write_json(target, {"eer": np.float32(0.5)})  # not JSON without a default
    assert json.loads(target.read_text())["eer"] == 0.25  # the old report stays
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    atomic.atomic_write_json(target, {"eer": np.float32(0.5)}, default=float)
    assert json.loads(target.read_text()) == {"eer": 0.5}
