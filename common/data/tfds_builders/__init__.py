"""TFDS builders for the three dataset families, and a Grain source that reads what they write.

One package per family, in the `tfds new` layout (`<name>/<name>_dataset_builder.py` with `class Builder`):
  video_inpainting_clips   clips of a DAVIS / YouTube-VOS-layout inpainting set (`readers.VideoInpaintingReader`)
  ffpp_faces               FaceForensics++ face crops with masks (`readers.FaceForensicsReader`)
  image_manipulation       Tp/Gt/Au folders or IMDL-BenCo JSON pair lists (`readers.ImageManipulationReader`)
Their `_generate_examples` iterate the folder readers, so decoding, checks and errors are the readers'. Build
with the Python API (the `tfds` CLI needs apache_beam):

  builder = video_inpainting_clips_dataset_builder.Builder(data_dir=OUT, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=DATASET_ROOT))

Building needs TensorFlow (PNG encoding). Reading goes through `source.TfdsSource` (`tfds.data_source`,
ArrayRecord random access, NumPy decoding: no tf.data). Importing this package imports neither.
"""
