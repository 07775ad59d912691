"""BentoML service for the image generators (``digits-gan`` by default).

Batchable HTTP API: ``POST /generate`` with ``requests``, a list of
``{seed, count, label?}``; each gets ``count`` images [count, C, H, W] in
metadata.image.value_range. Latents are drawn exactly as docs/model-repository.md
says (``services.runtime.prepare.generator_inputs``), so a seed gives the same images
here and through the queue.
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np
from pydantic import BaseModel, Field

from services.base import ModelServiceBase
from services.contract.errors import AxonError
from services.contract.inputs import MAX_GENERATE_COUNT
from services.runtime.prepare import generator_inputs


class GenerateRequest(BaseModel):
    """Parameters of one generate request."""

    seed: int = Field(ge=0, le=2**63 - 1)
    count: int = Field(default=1, ge=1, le=MAX_GENERATE_COUNT)
    label: int | None = Field(default=None, ge=0)


@bentoml.service(name="axon-generator", traffic={"timeout": 60})
class GeneratorService(ModelServiceBase):
    family = "generator"

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)  # type: ignore[untyped-decorator]
    def generate(self, requests: list[GenerateRequest]) -> list[list[Any]]:
        """One nested list of images [count, C, H, W] per request."""
        try:
            inputs = [generator_inputs(self.metadata, r.model_dump()) for r in requests]
        except AxonError as exc:
            raise bentoml.exceptions.InvalidArgument(str(exc)) from None
        outputs = self.run_requests(inputs)
        return [np.asarray(out["image"]).tolist() for out in outputs]

    @bentoml.api  # type: ignore[untyped-decorator]
    def model(self) -> dict[str, Any]:
        """Model metadata, provider and worker counters."""
        return self.describe()
