"""Engine: the training loop, optimizers and schedules, checkpoints."""
