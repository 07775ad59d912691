"""BentoML service for the image classifiers (``digits-cnn`` by default).

Serves ``axon:q:{model}:{version}`` through the shared worker loop and, for direct
in-cluster calls, a batchable HTTP API: ``POST /classify`` with ``images`` [N, C, H, W]
raw pixels → probabilities [N, K] (label order: ``POST /model`` → metadata.labels).
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np
import numpy.typing as npt

from services.base import ModelServiceBase, as_float32


@bentoml.service(name="axon-classifier", traffic={"timeout": 60})
class ClassifierService(ModelServiceBase):
    family = "classifier"

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)  # type: ignore[untyped-decorator]
    def classify(self, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """images [N, C, H, W] (pixel values in metadata.image.value_range) → [N, K]."""
        outputs = self.run_requests([{"image": as_float32(images, "images")}])
        return outputs[0]["probabilities"]

    @bentoml.api  # type: ignore[untyped-decorator]
    def model(self) -> dict[str, Any]:
        """Model metadata, provider and worker counters."""
        return self.describe()
