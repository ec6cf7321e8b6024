"""NCL-IML: pre-training-free image manipulation localization with non-mutually-exclusive contrast."""
