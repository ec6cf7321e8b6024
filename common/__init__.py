"""Shared layer of the forensics suite: layers, losses, metrics, data and the training engine."""
