"""The prunable network: gated convs and importances, backbones, cost accounting, checkpoints, supervised
fit/evaluate, the dense cache, export surgery; imports only the bottom modules (rtsearch.data, config, device,
errors, logs, storage)."""
