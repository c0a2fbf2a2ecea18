"""Stage 2, training: the training loop, checkpoints, DDP helpers and adaptive layerwise levels (AL)."""
