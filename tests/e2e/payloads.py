"""Request bodies shared by the e2e tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def images(rows: int, seed: int = 0) -> list[Any]:
    """``rows`` digit-like images [rows][1][8][8], pixel values 0..16."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 17, size=(rows, 1, 8, 8)).astype(float).tolist()


def infer_image(
    rows: int = 1, *, flat: bool = False, seed: int = 0, **extra: Any
) -> dict[str, Any]:
    data = images(rows, seed)
    if flat:
        data = np.asarray(data).ravel().tolist()
    tensor = {"name": "image", "shape": [rows, 1, 8, 8], "datatype": "FP32", "data": data}
    return {"inputs": [tensor], **extra}


def history(length: int = 12) -> list[float]:
    return [float(10 + (i * 7) % 23) for i in range(length)]
