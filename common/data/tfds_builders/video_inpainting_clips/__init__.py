"""TFDS builder package `video_inpainting_clips` (see video_inpainting_clips_dataset_builder.py)."""
