"""Dataset readers, Grain pipelines, transforms, TFDS builders and the embedded demo corpus."""
