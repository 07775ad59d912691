"""Time-series forecaster service (task ``forecast``)."""
