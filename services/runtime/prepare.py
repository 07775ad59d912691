"""Turn a checked request (``services.contract.inputs.check_request``) into the model's
input tensors (pure, no I/O).

Every task takes the model's input tensors as sent. A generator request without
tensors gets latents drawn as ``numpy.random.default_rng(seed).standard_normal((count,
latent_size), dtype=numpy.float32)`` (docs/model-repository.md); without ``label`` a
conditional model gets labels ``0, 1, …, num_classes-1, 0, …`` (row i has label
i % num_classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from services.contract.codec import Scalar
from services.contract.inputs import MAX_GENERATE_COUNT, generate_parameters
from services.contract.metadata import ModelMetadata

Tensors = dict[str, np.ndarray[Any, Any]]
"""Input or output name → array (axis 0 = rows)."""


def prepare_inputs(
    metadata: ModelMetadata,
    inputs: Mapping[str, np.ndarray[Any, Any]],
    parameters: Mapping[str, Scalar],
) -> Tensors:
    """Model input tensors for a request; raises ``InvalidInputError`` saying what is wrong."""
    if metadata.task == "generate" and not inputs:
        return generator_inputs(metadata, parameters)
    return dict(inputs)


def generator_inputs(metadata: ModelMetadata, parameters: Mapping[str, Scalar]) -> Tensors:
    """Latents (and labels) for a generate request given ``seed``, ``count``, ``label``:
    latent [count, latent_size] FP32, label [count] INT64 (conditional models)."""
    chosen = generate_parameters(metadata, parameters, max_count=MAX_GENERATE_COUNT)
    latent_size = metadata.latent_size
    assert latent_size is not None  # guaranteed by metadata validation for task generate
    rng = np.random.default_rng(chosen.seed)
    tensors: Tensors = {
        "latent": rng.standard_normal((chosen.count, latent_size), dtype=np.float32),
    }
    if metadata.conditional:
        if chosen.label is None:
            labels = np.arange(chosen.count, dtype=np.int64) % metadata.num_classes
        else:
            labels = np.full(chosen.count, chosen.label, dtype=np.int64)
        tensors["label"] = labels
    return tensors
