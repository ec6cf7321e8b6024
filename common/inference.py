"""The inference contract every exported model keeps: raw uint8 RGB in, normalised inside, described by fields.

A task's `export_spec()` returns `{"inputs", "input", "outputs"}`; the export's manifest carries them as they are,
and `common.predict` reads nothing else to prepare media for a model.

  inputs   {name: {"shape": [...], "dtype": "uint8", "layout": "HWC" | "THWC" | "HW", "range": [0, 255]}}, batch
           excluded; spatial dimensions are ints, or the names "h" / "w" where the export is symbolic in them.
  input    how raw media become those arrays (`InputSpec`'s fields):
             kind         "image" | "clip" (T consecutive frames; the model predicts the middle one) | "face" (a
                          square crop around the face box) | "inpaint" (image + hole mask);
             size         [H, W] the model was trained at;
             symbolic     whether the export takes any H, W that are multiples of `multiple` (fully convolutional);
             fixed_reason why not, when it does not;
             resize       "bilinear" | "bicubic": how an input is resampled to `size` when it must be;
             native       how predict meets an input of another size: "tiles" (overlapping tiles at `size`, never
                          resampled: models that read noise residuals), "whole" (the whole input at its own size,
                          padded up to `multiple`; symbolic exports only) or "resize" (resampled to `size`);
             clip_length, face_crop_scale, square_crop: the kind's own fields (0 / False where they do not apply).
  outputs  {name: meaning}.
"""
from __future__ import annotations

import dataclasses

KINDS = ("image", "clip", "face", "inpaint")
NATIVE = ("tiles", "whole", "resize")
SYMBOLIC_DIMS = ("h", "w")


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """How raw media become model inputs (the manifest's `input` block)."""
  kind: str
  size: tuple[int, int]
  resize: str = "bilinear"
  native: str = "resize"
  symbolic: bool = False
  multiple: int = 1
  fixed_reason: str = ""
  clip_length: int = 0
  face_crop_scale: float = 0.0
  square_crop: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"input.kind: {self.kind!r} is not one of {KINDS}")
    if self.native not in NATIVE:
      raise ValueError(f"input.native: {self.native!r} is not one of {NATIVE}")
    if self.symbolic == bool(self.fixed_reason):
      raise ValueError("input: a fixed-size export says why (fixed_reason), a symbolic one does not")
    if self.native == "whole" and not self.symbolic:
      raise ValueError("input.native: 'whole' needs a symbolic export")
    if self.kind == "clip" and self.clip_length < 1:
      raise ValueError("input.clip_length: a clip model needs its clip length")

  @classmethod
  def from_manifest(cls, fields: dict, source: str = "") -> "InputSpec":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown or "kind" not in fields or "size" not in fields:
      raise ValueError(f"{source}: the manifest's input block is not this suite's contract (unknown fields "
                       f"{unknown}, or no kind / size); re-export the model with `python -m common.train.export`")
    return cls(**{**fields, "size": tuple(int(v) for v in fields["size"])})

  def to_manifest(self) -> dict:
    return {**dataclasses.asdict(self), "size": list(self.size)}

  def accepts(self, height: int, width: int) -> bool:
    """Whether the export takes an [height, width] input as it is."""
    if self.symbolic:
      return height % self.multiple == 0 and width % self.multiple == 0
    return (height, width) == tuple(self.size)


def spec(inputs: dict[str, dict], input_spec: InputSpec, outputs: dict[str, str]) -> dict:
  """A task's `export_spec()`: the inputs' shapes (spatial dims "h"/"w" when symbolic), uint8 0-255, and the rest."""
  return {"inputs": {name: {"dtype": "uint8", "range": [0, 255], **fields} for name, fields in inputs.items()},
          "input": input_spec.to_manifest(), "outputs": dict(outputs)}


def spatial(input_spec: InputSpec) -> list:
  """The [H, W] of an input's shape: ints, or ["h", "w"] when the export is symbolic in them."""
  return list(SYMBOLIC_DIMS) if input_spec.symbolic else list(input_spec.size)
