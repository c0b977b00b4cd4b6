"""Global tone looks: one colour map, predicted at thumbnail size, applied to the full-resolution source.

Where the set ships a `LookModel` (mini) and it says the instruction is a global look ("make it
night", "sepia", "more contrast"), `mobilepicasso` needs neither the editor nor the upscaler: every
output pixel is the look's 3x4 affine map of the source's own pixel, so a 4K photo keeps every edge
and texture. Sets without one (sd15) edit looks like any other instruction.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from pipeline.models.look import LookPrediction
from pipeline.stages.region import encode_text, pil_to_tensor

LOOK_THRESHOLD = 0.5


@torch.no_grad()
def predict_look(models, image: Image.Image, instruction: str) -> LookPrediction | None:
    """The set's look prediction for this image and instruction (None when the set has no look model)."""
    model = models.look
    if model is None:
        return None
    side = model.config.thumbnail
    thumb = image.convert("RGB").resize((side, side), Image.Resampling.BOX)
    states, mask = encode_text(models.edit_pipeline, [instruction])
    param = next(model.parameters())
    x = pil_to_tensor(thumb).to(param.device, param.dtype)
    p = model.predict(x, states.to(x), mask.to(x.device))
    return LookPrediction(p.probability.float().cpu(), p.matrix.float().cpu(), p.offset.float().cpu())


def apply_look(look: LookPrediction, pixels: np.ndarray) -> np.ndarray:
    """The look's colour map on pixels (H, W, 3): uint8, rounded and saturated to uint8 (OpenCV's
    per-pixel matrix transform: no float copy of a 4K frame is made), or float32 in [0, 1], unclipped."""
    scale = 255.0 if pixels.dtype == np.uint8 else 1.0
    m = np.concatenate([look.matrix[0].numpy(), scale * look.offset[0].numpy()[:, None]], axis=1)
    return cv2.transform(np.ascontiguousarray(pixels), m.astype(np.float64))
