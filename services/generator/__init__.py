"""Image generator service (task ``generate``)."""
