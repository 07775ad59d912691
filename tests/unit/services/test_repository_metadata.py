"""metadata.json validation (schema_version 1): each refusal names the file and problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.contract.errors import ModelRepositoryError
from services.contract.metadata import parse_metadata

SOURCE = Path("models/m/1/metadata.json")


def forecaster(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schema_version": 1,
        "name": "m",
        "version": 1,
        "task": "forecast",
        "sha256": "a" * 64,
        "inputs": [{"name": "history", "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [{"name": "forecast", "datatype": "FP32", "shape": [-1, 4]}],
        "window": 12,
        "horizon": 4,
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def test_valid_document_parses() -> None:
    meta = parse_metadata(forecaster(), SOURCE)
    assert (meta.task, meta.window, meta.horizon, meta.inputs[0].shape) == (
        "forecast",
        12,
        4,
        (-1, -1),
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_version": 2}, "schema_version must be 1"),
        ({"name": "Bad_Name"}, "name 'Bad_Name' must match"),
        ({"version": 0}, "version 0 must be a positive integer"),
        ({"task": "segment"}, "task 'segment' must be one of"),
        ({"sha256": "xyz"}, "sha256 must be 64 lowercase hex digits"),
        ({"inputs": []}, "inputs must be a non-empty list"),
        (
            {"inputs": [{"name": "history", "datatype": "FLOAT", "shape": [-1, -1]}]},
            "datatype 'FLOAT'",
        ),
        ({"inputs": [{"name": "history", "datatype": "FP32", "shape": [4, -1]}]}, "must be -1"),
        (
            {"inputs": [{"name": "series", "datatype": "FP32", "shape": [-1, -1]}]},
            "must declare 'history'",
        ),
        ({"horizon": None}, "horizon must be a positive integer"),
        ({"horizon": 5}, "'forecast' has 4 steps, horizon is 5"),
    ],
)
def test_bad_documents_are_refused_naming_the_file(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelRepositoryError, match=message) as info:
        parse_metadata(forecaster(**changes), SOURCE)
    assert str(SOURCE) in str(info.value)


def test_conditional_generator_needs_a_label_input() -> None:
    document = {
        "schema_version": 1,
        "name": "g",
        "version": 1,
        "task": "generate",
        "sha256": "b" * 64,
        "inputs": [{"name": "latent", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "latent_size": 8,
        "conditional": True,
        "num_classes": 10,
    }
    with pytest.raises(ModelRepositoryError, match="must declare 'label'"):
        parse_metadata(document, SOURCE)
