"""Training: data cache, the paper's stages, and an Accelerate loop (see `v2a train`)."""
