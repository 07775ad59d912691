"""BentoML service for the time-series forecasters (``sunspots-lstm`` by default).

Batchable HTTP API: ``POST /forecast`` with ``histories`` (a list of series, each of any
length >= 1, in the series' own units) → one list of ``horizon`` values per series.
Series of equal length share one ONNX Runtime run.
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np

from services.base import ModelServiceBase, as_float32


@bentoml.service(name="axon-forecaster", traffic={"timeout": 60})
class ForecasterService(ModelServiceBase):
    family = "forecaster"

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)  # type: ignore[untyped-decorator]
    def forecast(self, histories: list[list[float]]) -> list[list[float]]:
        """histories: N series → N forecasts of ``horizon`` values each."""
        requests = [
            {"history": as_float32(series, f"histories[{i}]").reshape(1, -1)}
            for i, series in enumerate(histories)
        ]
        outputs = self.run_requests(requests)
        return [np.asarray(out["forecast"])[0].tolist() for out in outputs]

    @bentoml.api  # type: ignore[untyped-decorator]
    def model(self) -> dict[str, Any]:
        """Model metadata, provider and worker counters."""
        return self.describe()
