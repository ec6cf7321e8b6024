"""Delocate: deepfake detection and localization from masked-ROI recovery discrepancy."""
