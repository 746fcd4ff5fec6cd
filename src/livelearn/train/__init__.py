"""Training: the online trainer and its streaming metrics."""
