import numpy as np
import pytest

from tdnn_siamese.signature import Signature

from .conftest import make_signature


def test_arrays_are_read_only_and_typed():
    s = make_signature()
    assert s.pen_down.dtype == bool and s.x.dtype == np.float64
    with pytest.raises(ValueError):
        s.x[0] = 1.0


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="pressure"):
        Signature(t=np.arange(5.0), x=np.zeros(5), y=np.zeros(5), pen_down=np.ones(5, bool), pressure=np.zeros(4))


def test_unknown_label_is_refused():
    with pytest.raises(ValueError, match="label"):
        make_signature(label="forgery")


def test_strokes_duration_channels():
    s = make_signature(n=40)
    assert s.n_strokes == 2  # one lift in the middle
    assert s.duration_ms == 390.0
    assert s.channels == ("pressure", "azimuth", "altitude")
    assert make_signature(channels=False).channels == ()
