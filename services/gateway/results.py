"""How each inference endpoint turns a reply's output tensors into its response: one
function per endpoint, used by the synchronous handler and, for an async job, by
``GET /v1/jobs/{id}`` (``render_job``: the job's stored options), so a job's result is
exactly the body the synchronous call would have returned."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from starlette.responses import Response

from services.gateway.images import pixels_to_pngs
from services.gateway.oip_codec import encode_outputs
from services.gateway.registry import ModelVersion
from services.gateway.responses import JSON, BinaryTensors, FastJSON
from services.gateway.state import version_header

T = TypeVar("T")
Outputs = Mapping[str, np.ndarray[Any, Any]]


def render_infer(
    mv: ModelVersion,
    outputs: Outputs,
    oip_id: str | None,
    selection: Sequence[str] | None,
    as_raw: frozenset[str],
) -> Response:
    """The OIP infer response: JSON, or binary tensor data for the ``as_raw`` outputs."""
    body: dict[str, Any] = {"model_name": mv.name, "model_version": str(mv.version)}
    if oip_id is not None:
        body["id"] = oip_id
    body["outputs"], raw = encode_outputs(outputs, mv.metadata, selection, as_raw)
    as_json = [outputs[tensor["name"]] for tensor in body["outputs"] if "data" in tensor]
    if raw:
        return BinaryTensors(body, raw, finite=as_json, headers=version_header(mv))
    return FastJSON(body, headers=version_header(mv), finite=as_json)


def render_classify(mv: ModelVersion, outputs: Outputs, top_k: int) -> Response:
    """Top-``top_k`` labels with probabilities per image."""
    labels = mv.metadata.labels
    predictions = []
    for row in outputs["probabilities"]:
        order = np.argsort(-row, kind="stable")[:top_k]
        top = [
            {"label": labels[i] if i < len(labels) else str(i), "index": int(i),
             "probability": float(row[i])}
            for i in order
        ]  # fmt: skip
        predictions.append({**top[0], "top_k": top})
    return JSON(
        {"model": mv.name, "version": mv.version, "predictions": predictions},
        headers=version_header(mv),
    )


def render_forecast(mv: ModelVersion, outputs: Outputs, horizon: int) -> Response:
    """The forecasts, cut to ``horizon`` steps."""
    return JSON(
        {
            "model": mv.name,
            "version": mv.version,
            "horizon": horizon,
            "window": mv.metadata.window,
            "forecasts": outputs["forecast"][:, :horizon].tolist(),
        },
        headers=version_header(mv),
    )


async def render_generate(
    mv: ModelVersion,
    outputs: Outputs,
    seed: Any,
    label: Any,
    fmt: str,
    pool: ThreadPoolExecutor | None,
) -> Response:
    """The images as PNG (encoded in ``pool``, off the event loop) or arrays."""
    meta = mv.metadata
    images = outputs["image"]
    value_range = meta.raw.get("image", {}).get("value_range", [0, 1])
    body: dict[str, Any] = {"model": mv.name, "version": mv.version, "seed": seed}
    if meta.conditional:
        body["label"] = label
    body["format"] = fmt
    if fmt == "png":
        body["images"] = await in_pool(pool, functools.partial(pixels_to_pngs, images, value_range))
    else:
        body["images"] = images.tolist()
    return JSON(body, headers=version_header(mv))


async def in_pool(pool: ThreadPoolExecutor | None, work: Callable[[], T]) -> T:
    """Run CPU-bound image ``work`` in the gateway's image pool (None: the loop's
    default executor)."""
    return await asyncio.get_running_loop().run_in_executor(pool, work)


KINDS = ("infer", "classify", "forecast", "generate")


async def render_job(
    mv: ModelVersion,
    outputs: Outputs,
    kind: str,
    options: Mapping[str, Any],
    pool: ThreadPoolExecutor | None,
) -> Response:
    """``kind``'s response for ``outputs`` with the options its handler stored with the
    job (``options_for_*`` below name them); ``ValueError`` for an unknown kind."""
    if kind == "infer":
        selection = options.get("outputs")
        return render_infer(
            mv,
            outputs,
            options.get("id"),
            None if selection is None else tuple(selection),
            frozenset(options.get("binary", ())),
        )
    if kind == "classify":
        return render_classify(mv, outputs, int(options["top_k"]))
    if kind == "forecast":
        return render_forecast(mv, outputs, int(options["horizon"]))
    if kind == "generate":
        return await render_generate(
            mv, outputs, options["seed"], options.get("label"), str(options["format"]), pool
        )
    raise ValueError(f"unknown job kind {kind!r}")


def options_for_infer(
    oip_id: str | None, selection: Sequence[str] | None, as_raw: frozenset[str]
) -> dict[str, Any]:
    return {
        "id": oip_id,
        "outputs": None if selection is None else list(selection),
        "binary": sorted(as_raw),
    }
