"""Training, checkpoints and evaluation of CEUSegNet."""
