"""Reproducible train/validation/test splits."""

from __future__ import annotations

import numpy as np

from training.errors import DataError


def stratified_split(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test), stratified by class label `y` ([N] int)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
        if val_fraction <= 0:
            return rest, np.array([], dtype=np.int64), test
        val_share = val_fraction / (1.0 - test_fraction)
        train, val = train_test_split(
            rest, test_size=val_share, random_state=seed, stratify=y[rest]
        )
    except ValueError as exc:
        raise DataError(f"data: too few samples per class to split: {exc}") from exc
    return train, val, test
