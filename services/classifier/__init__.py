"""Image classifier service (task ``classify``)."""
