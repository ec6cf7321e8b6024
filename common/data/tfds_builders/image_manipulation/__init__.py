"""TFDS builder package `image_manipulation` (see image_manipulation_dataset_builder.py)."""
