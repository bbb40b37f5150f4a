"""Joint augmentation of a dense multi-task sample (LibMTL ``examples/nyu/create_dataset.py``).

``RandomScaleCrop``: pick a scale ``s`` from ``scales``, crop an ``(H/s, W/s)`` window at a random
position and resize it back to ``(H, W)``; depth is divided by ``s`` (the crop looks ``s`` times
closer). Horizontal flip (probability 0.5) mirrors every map and negates the normal's x component.

Note: LibMTL resizes the normal map bilinearly (which mixes invalid zeros into valid pixels and breaks
unit length); here normals, labels and depth use nearest-neighbour resizing, so every output pixel is a
copy of an input pixel and the masks stay exact. The image is resized bilinearly (``align_corners=True``).

Randomness comes only from the ``torch.Generator`` passed in, so a (seed, epoch, index) triple gives the
same augmentation in any DataLoader worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mtrl.vision.tasks import TaskSpec

__all__ = ["DEFAULT_SCALES", "augment_sample", "hflip", "scale_crop"]

DEFAULT_SCALES: tuple[float, ...] = (1.0, 1.2, 1.5)  # LibMTL RandomScaleCrop


def scale_crop(
    sample: dict[str, Tensor], tasks: Sequence[TaskSpec], scale: float, top: int, left: int
) -> dict[str, Tensor]:
    """Crop the ``(int(H/scale), int(W/scale))`` window at ``(top, left)`` of every map and resize it to ``(H, W)``.

    Depth targets are divided by ``scale``; invalid (0) depth stays 0.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1 (a zoom-in crop), got {scale}")
    height, width = sample["image"].shape[-2:]
    h, w = int(height / scale), int(width / scale)
    if not (0 <= top <= height - h and 0 <= left <= width - w):
        raise ValueError(f"crop ({top}, {left}) of size ({h}, {w}) does not fit in ({height}, {width})")
    rows, cols = slice(top, top + h), slice(left, left + w)
    out = dict(sample)
    image = sample["image"][None, :, rows, cols]
    out["image"] = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=True)[0]
    for spec in tasks:
        target = sample[spec.name]
        if spec.kind == "seg":
            crop = target[None, None, rows, cols].to(torch.float32)
            out[spec.name] = F.interpolate(crop, size=(height, width), mode="nearest")[0, 0].to(target.dtype)
        else:
            crop = F.interpolate(target[None, :, rows, cols], size=(height, width), mode="nearest")[0]
            out[spec.name] = crop / scale if spec.kind == "depth" else crop
    return out


def hflip(sample: dict[str, Tensor], tasks: Sequence[TaskSpec]) -> dict[str, Tensor]:
    """Mirror every map left-right; the x component of normal maps changes sign."""
    out = dict(sample)
    out["image"] = sample["image"].flip(-1)
    for spec in tasks:
        flipped = sample[spec.name].flip(-1)
        if spec.kind == "normal":
            flipped = flipped.clone()
            flipped[0] = -flipped[0]
        out[spec.name] = flipped
    return out


def augment_sample(
    sample: dict[str, Tensor],
    tasks: Sequence[TaskSpec],
    generator: torch.Generator,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip_prob: float = 0.5,
) -> dict[str, Tensor]:
    """Random scale-crop then random horizontal flip, one draw shared by the image and all task maps."""
    height, width = sample["image"].shape[-2:]
    scale = float(scales[int(torch.randint(len(scales), (1,), generator=generator))])
    h, w = int(height / scale), int(width / scale)
    top = int(torch.randint(height - h + 1, (1,), generator=generator))
    left = int(torch.randint(width - w + 1, (1,), generator=generator))
    out = scale_crop(sample, tasks, scale, top, left) if scale != 1.0 else dict(sample)
    if float(torch.rand((1,), generator=generator)) < flip_prob:
        out = hflip(out, tasks)
    return out
