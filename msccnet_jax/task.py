"""MSCCNet as an engine task: FF++ face crops, three cross-entropy losses, the official and per-image metrics.

Training (`main/train_segmentor.py`, `models/base/base.py`): loss = image CE (image logits vs. the frame label)
+ mask CE (decoder logits upsampled bilinearly, align_corners=False, to the input size, vs. the {0,1} mask; 255
ignored) + map CE (the MSCC coarse map, upsampled the same way), weights 1.0 each (`config.loss`). Real frames
have all-zero masks; the reader lists the real frame after each fake one, as the official loader.

Evaluation, both protocols on the same predictions (mask = argmax of the upsampled logits, i.e. p(fake) > 0.5;
image score = softmax(image logits)[fake]):
  * official (`main/test_segmentor.py`, `utils/metric.py`): `image_acc`, `image_auc` over frames;
    `pixel_f1_class_avg`, `pixel_iou_class_avg`: one confusion matrix over every pixel of every frame, real
    frames included, averaged over the two classes. Real frames are listed once (`real_per_method=False`), as
    the official de-duplication counts them;
  * per image (`common.metrics`): `pixel_f1`, `pixel_iou`, `pixel_auc`, mean over the fake frames.
  Pixels are scored at the model's input size (the official test upsamples to each crop's own size).
"""

import functools
import os

import flax
import jax
import jax.numpy as jnp
from clu import metrics as clu_metrics

from common import inference, metrics
from common.data import demo, prepared, transforms
from common.data.faces import detection as face_detection
from common.data.readers import FaceForensicsReader
from common.data.readers import face_videos
from common.losses import segmentation
from common.train.task import Task
from msccnet_jax import model as model_lib

# The official Normalize: BGR -> RGB, then ImageNet mean / std on the 0-255 scale.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
IGNORE_INDEX = 255


@flax.struct.dataclass
class MSCCNetMetrics(clu_metrics.Collection):
  image_acc: metrics.ImageAccuracy
  image_auc: metrics.ImageAUC
  pixel_f1_class_avg: metrics.ClassAveragedPixelF1
  pixel_iou_class_avg: metrics.ClassAveragedPixelIoU
  pixel_f1: metrics.PixelF1
  pixel_iou: metrics.PixelIoU
  pixel_auc: metrics.PixelAUC


@flax.struct.dataclass
class DetectionMetrics(clu_metrics.Collection):
  """The image-level metrics: all a set without pixel masks (a cross-dataset face set) can give."""
  image_acc: metrics.ImageAccuracy
  image_auc: metrics.ImageAUC


def normalize(image: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 / float RGB [..., 3] on the 0-255 scale -> normalised `dtype` (the official Normalize)."""
  return ((image.astype(jnp.float32) - jnp.asarray(MEAN)) / jnp.asarray(STD)).astype(dtype)


class MSCCNetTask(Task):

  def build_models(self, rngs):
    return {"model": model_lib.MSCCNet.from_config(self.config, dtype=self.dtype, rngs=rngs)}

  # ------------------------------------------------------------------ data
  def _root(self) -> str:
    return self.config.data.root or os.path.join(demo.ensure_demo_corpus(), "faces")

  @property
  def face_set(self) -> bool:
    """True when `data.layout` names a cross-dataset test set (labelled videos without masks), not FF++."""
    return self.config.data.get("layout", "faceforensics") != "faceforensics"

  @functools.cache  # one index per split: `input_pipeline` builds it (and raises DataError) when called
  def source(self, split: str) -> FaceForensicsReader:
    d = self.config.data
    if self.face_set:
      if split == "train":
        raise ValueError(f"data.layout: the {d.layout} set has no pixel masks; it is an evaluation set (train on "
                         "FF++, data.layout='faceforensics')")
      return face_videos.reader_from_config(d)
    split_name = d.train_split if split == "train" else split
    if prepared.use_prepared(d):
      return prepared.PreparedFaces(prepared.faces_dir(d, resizes_first=not d.augment), split_name,
                                    methods=tuple(d.methods) or None,
                                    real_per_method=split == "train")
    root = self._root()
    methods = tuple(d.methods) or tuple(sorted(os.listdir(os.path.join(root, "manipulated_sequences"))))
    boxes = None
    if d.face_boxes:
      boxes = face_detection.PrecomputedFaceBoxes(os.path.join(root, d.face_boxes))
    return FaceForensicsReader(root, split_name, methods=methods, compression=d.compression,
                               frames_per_video=d.frames_per_video, crop_scale=d.crop_scale, face_boxes=boxes,
                               mask_source=d.mask_source, real_per_method=split == "train", verify=d.verify,
                               on_error=d.on_error)

  def steps_per_epoch(self) -> int:
    return max(len(self.source("train")) // self.config.global_batch_size, 1)

  def transforms(self, split: str) -> list:
    """Evaluation: resize to `size`. Training, the official train pipeline (`data.augment`): rescale the longer
    side to `size * 520/512` times U[scale_range), random `size` crop (class ratio < cat_max_ratio, 10 tries),
    flip, photometric distortion, centred padding to `size` (mean colour; mask 255 = ignored). Without it:
    resize to `size` (and flip)."""
    d = self.config.data
    if split != "train":
      return [transforms.Resize(d.size, d.size)]
    flip = [transforms.RandomHorizontalFlip()] if d.flip else []
    if not d.augment:
      return [transforms.Resize(d.size, d.size)] + flip
    return [transforms.RandomRescale(round(d.size * 520 / 512), tuple(d.scale_range)),
            transforms.RandomCrop(d.size, d.size, smaller="keep", cat_max_ratio=d.cat_max_ratio,
                                  ignore_index=IGNORE_INDEX),
            *flip,
            *([transforms.PhotoMetricDistortion(bgr_as_rgb_quirk=d.hsv_quirk)] if d.photometric else []),
            transforms.CenterPad(d.size, d.size, fill=tuple(round(m) for m in MEAN), mask_fill=IGNORE_INDEX)]

  # ------------------------------------------------------------------ steps
  def _forward(self, net, image):
    """Model outputs with the mask logits and the coarse map upsampled to the input size (float32)."""
    out = net(normalize(image, self.dtype))
    size = image.shape[1:3]
    return {"image_logits": out["image_logits"].astype(jnp.float32),
            **{k: model_lib.upsample_bilinear(out[k].astype(jnp.float32), size)
               for k in ("mask_logits", "coarse_map") if k in out}}

  def loss(self, models, batch, rng):
    del rng
    w = self.config.loss
    out = self._forward(models["model"], batch["image"])
    mask = batch["mask"].astype(jnp.int32)
    terms = {
        "loss_image": segmentation.softmax_cross_entropy(out["image_logits"], batch["label"].astype(jnp.int32),
                                                         ignore_index=IGNORE_INDEX),
        "loss_mask": segmentation.softmax_cross_entropy(out["mask_logits"], mask, ignore_index=IGNORE_INDEX),
    }
    total = w.image_weight * terms["loss_image"] + w.mask_weight * terms["loss_mask"]
    if "coarse_map" in out:  # absent without the MSCC module (config.model.mscc=False): no map term
      terms["loss_map"] = segmentation.softmax_cross_entropy(out["coarse_map"], mask, ignore_index=IGNORE_INDEX)
      total += w.map_weight * terms["loss_map"]
    return total, terms

  def _scores(self, net, image):
    out = self._forward(net, image)
    return jax.nn.softmax(out["image_logits"], -1)[:, 1], jax.nn.softmax(out["mask_logits"], -1)[..., 1]

  def eval_step(self, state, batch):
    score, probs = self._scores(self.models(state)["model"], batch["image"])
    collection = DetectionMetrics if self.face_set else MSCCNetMetrics
    return collection.single_from_model_output(pred_label=score, label=batch["label"], pred_mask=probs,
                                               gt_mask=batch["mask"], valid=batch["valid"])

  def image_summaries(self, state, batch):
    _, probs = self._scores(self.models(state)["model"], batch["image"][:4])
    image = batch["image"][:4].astype(jnp.float32) / 255.0
    heat = jnp.stack([probs, jnp.zeros_like(probs), 1.0 - probs], -1)
    return {"overlay": 0.5 * image + 0.5 * heat, "mask": batch["mask"][:4, ..., None].astype(jnp.float32)}

  # ------------------------------------------------------------------ export
  def predict(self, models, inputs):
    score, probs = self._scores(models["model"], inputs["image"])
    return {"score": score, "probs": probs}

  def export_spec(self):
    s = self.config.data.size
    shape = inference.InputSpec(
        kind="face", size=(s, s), face_crop_scale=self.config.data.crop_scale,
        fixed_reason="the DCT bases of the multi-spectral class centers are built for a concrete feature size; "
                     "face crops are resized to the trained size")
    return inference.spec({"image": {"shape": [s, s, 3], "layout": "HWC"}}, shape,
                          {"score": "probability that the face is manipulated, [B]",
                           "probs": f"per-pixel manipulation probability, [B, {s}, {s}]"})
