"""Parts of the shared training loop: config, ranks, optimisers, EMA, checkpoints, logging."""
