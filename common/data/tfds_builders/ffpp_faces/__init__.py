"""TFDS builder package `ffpp_faces` (see ffpp_faces_dataset_builder.py)."""
