"""Datasets: windows, missing values, CSV and image folders with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.images import load_digits, load_images
from training.data.series import load_series, make_windows
from training.errors import DataError
from training.models.forecaster import ForecasterConfig
from training.pipelines.forecast import split_series


def test_windows() -> None:
    x, y = make_windows(np.arange(10.0), window=3, horizon=2)
    assert x.shape == (6, 3) and y.shape == (6, 2)
    assert x[0].tolist() == [0, 1, 2] and y[0].tolist() == [3, 4]
    assert x[-1].tolist() == [5, 6, 7] and y[-1].tolist() == [8, 9]
    with pytest.raises(DataError, match="too short"):
        make_windows(np.arange(4.0), 3, 2)


def test_split_keeps_targets_in_their_segment() -> None:
    from dataclasses import replace

    cfg = replace(ForecasterConfig(), window=5, horizon=3, val_fraction=0.2, test_fraction=0.2)
    sp = split_series(np.arange(100.0), cfg)
    assert sp.test_start == 80 and sp.val_start == 60
    assert sp.y[sp.train].max() < 60
    assert sp.y[sp.val].min() >= 60 and sp.y[sp.val].max() < 80
    assert sp.y[sp.test].min() >= 80


def test_builtin_series() -> None:
    s = load_series("sunspots", None)
    assert len(s.values) == 309 and s.missing_filled == 0
    co2 = load_series("co2", None)
    assert co2.missing_filled == 59 and np.isfinite(co2.values).all()


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("t,value\n1,1.0\n2,\n3,3.0\n4,4.0\n")
    s = load_series(str(path), "value")
    assert s.values.tolist() == [1.0, 2.0, 3.0, 4.0] and s.missing_filled == 1
    with pytest.raises(DataError, match="column: 'nope' is not in .*columns: t, value"):
        load_series(str(path), "nope")
    with pytest.raises(DataError, match="name the column"):
        load_series(str(path), None)
    with pytest.raises(DataError, match="neither a built-in series"):
        load_series(str(tmp_path / "missing.csv"), "value")


def test_digits() -> None:
    d = load_digits()
    assert d.x.shape == (1797, 1, 8, 8) and d.x.dtype == np.float32
    assert d.x.max() == 16 and d.labels == tuple("0123456789")


def test_image_folder(tmp_path: Path) -> None:
    for k, colour in (("cats", 10), ("dogs", 200)):
        (tmp_path / k).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 10), (colour, i, 0)).save(tmp_path / k / f"{i}.png")
    data = load_images(str(tmp_path), (16, 16), 3)
    assert data.x.shape == (6, 3, 16, 16) and data.labels == ("cats", "dogs")
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    grey = load_images(str(tmp_path), (8, 8), 1)
    assert grey.shape == (1, 8, 8)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_images(str(tmp_path / "nope"), (8, 8), 1)
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_images(str(tmp_path), (8, 8), 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_images(str(tmp_path), (8, 8), 1)
    (tmp_path / "only" / "x.png").write_bytes(b"not a png")
    (tmp_path / "empty" / "y.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_images(str(tmp_path), (8, 8), 1)
