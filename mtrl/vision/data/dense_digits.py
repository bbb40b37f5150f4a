"""``dense_digits``: real handwritten glyphs composited into dense multi-task scenes.

Glyphs are scikit-learn's bundled ``load_digits`` (UCI optical digits, 1797 images of 8×8, 10 classes;
Alpaydin & Kaynak 1998), so this is small real data available offline.
Each scene places 2–``max_digits`` glyphs, bilinearly upsampled ×``glyph_scales``, at random positions on a
textured background; glyphs are drawn back to front with random ink colours, so nearer ones occlude farther ones.

Tasks:
- ``seg`` (H,W) int64: 0 = background, ``1 + digit`` where a glyph's stroke is the front-most (11 classes).
- ``depth`` (1,H,W) float32: occlusion-layer depth; every glyph gets a distinct depth in [1, 5] (nearer = drawn
  later) and the background is at ``BACKGROUND_DEPTH``. Every pixel is valid.

Train and val draw glyphs from disjoint source images (val: source index ≡ 0 mod 5), and scenes are
deterministic from ``(seed, split, index)``. Needs the ``digits`` extra (scikit-learn), imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from mtrl.vision.data.synthetic import _smooth_noise
from mtrl.vision.tasks import TaskSpec

__all__ = ["BACKGROUND_DEPTH", "DENSE_DIGITS_TASKS", "DenseDigits", "Placement", "load_glyphs"]

BACKGROUND_DEPTH = 6.0
DENSE_DIGITS_TASKS: tuple[TaskSpec, ...] = (TaskSpec("seg", "seg", 11), TaskSpec("depth", "depth", 1))
_SPLIT_IDS = {"train": 0, "val": 1}
_DEFAULT_LENGTH = {"train": 2000, "val": 500}
_STROKE = 0.3  # upsampled intensity (in [0, 1]) above which a pixel belongs to the glyph


@dataclass(frozen=True)
class Placement:
    """One glyph of a scene: its digit, layer depth, top-left corner, side in pixels and source image index."""

    digit: int
    depth: float
    top: int
    left: int
    side: int
    source: int


@lru_cache(maxsize=1)
def load_glyphs() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """All ``load_digits`` glyphs ``(1797, 8, 8)`` in [0, 1] and their labels ``(1797,)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("dense_digits needs scikit-learn: pip install 'mtrl[digits]'") from err
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


class DenseDigits(Dataset[dict[str, Tensor]]):
    """Scenes of occluding handwritten digits with seg + occlusion-depth labels (see the module docstring).

    Args:
        split: ``"train"`` or ``"val"``.
        size: ``(H, W)`` canvas; must fit the largest glyph (8·max(glyph_scales)).
        length: number of samples (default 2000 train / 500 val).
        seed: data set seed.
        max_digits: at most this many glyphs per scene (at least 2).
        glyph_scales: integer upsampling factors of the 8×8 glyphs, one drawn per glyph.
        noise: std of the Gaussian image noise.
    """

    tasks: tuple[TaskSpec, ...] = DENSE_DIGITS_TASKS

    def __init__(
        self,
        split: str = "train",
        *,
        size: tuple[int, int] = (48, 48),
        length: int | None = None,
        seed: int = 0,
        max_digits: int = 4,
        glyph_scales: tuple[int, ...] = (2, 3),
        noise: float = 0.02,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split={split!r}; valid splits: {tuple(_SPLIT_IDS)}")
        if max_digits < 2 or not glyph_scales or min(glyph_scales) < 1:
            raise ValueError(f"need max_digits >= 2 and glyph_scales >= 1; got {max_digits}, {glyph_scales}")
        if min(size) < 8 * max(glyph_scales):
            raise ValueError(
                f"size={size} cannot hold a glyph of {8 * max(glyph_scales)} px (glyph_scales={glyph_scales})"
            )
        self.split = split
        self.size = (int(size[0]), int(size[1]))
        self.length = _DEFAULT_LENGTH[split] if length is None else int(length)
        self.seed = seed
        self.max_digits = max_digits
        self.glyph_scales = glyph_scales
        self.noise = noise
        images, labels = load_glyphs()
        pool = np.arange(len(labels))
        pool = pool[pool % 5 == 0] if split == "val" else pool[pool % 5 != 0]
        self._glyphs = torch.from_numpy(images[pool])[:, None]  # (G,1,8,8)
        self._labels = labels[pool]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self._render(index)[0]

    def placements(self, index: int) -> list[Placement]:
        """The glyphs of scene ``index``, back to front (for inspection and tests)."""
        return self._render(index)[1]

    def glyph_mask(self, placement: Placement) -> NDArray[np.bool_]:
        """Stroke mask ``(side, side)`` of a placed glyph."""
        return self._glyph_alpha(placement.source, placement.side) > _STROKE

    def _glyph_alpha(self, source: int, side: int) -> NDArray[np.float32]:
        glyph = F.interpolate(
            self._glyphs[source : source + 1], size=(side, side), mode="bilinear", align_corners=False
        )
        return glyph[0, 0].numpy().clip(0, 1)

    def _render(self, index: int) -> tuple[dict[str, Tensor], list[Placement]]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        height, width = self.size
        weight = _smooth_noise(rng, height, width, cell=6)[..., None]
        image = rng.uniform(0, 1, 3) * (1 - weight) + rng.uniform(0, 1, 3) * weight  # (H,W,3) background
        seg = np.zeros((height, width), np.int64)
        depth = np.full((height, width), BACKGROUND_DEPTH, np.float32)
        count = int(rng.integers(2, self.max_digits + 1))
        placements = []
        for z in np.sort(rng.uniform(1.0, 5.0, count))[::-1]:  # back to front
            source = int(rng.integers(len(self._labels)))
            side = 8 * int(rng.choice(self.glyph_scales))
            top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
            placement = Placement(int(self._labels[source]), float(z), top, left, side, source)
            alpha = self._glyph_alpha(source, side)
            rows, cols = slice(top, top + side), slice(left, left + side)
            ink = rng.uniform(0, 1, 3)
            image[rows, cols] = image[rows, cols] * (1 - alpha[..., None]) + ink * alpha[..., None]
            stroke = alpha > _STROKE
            seg[rows, cols][stroke] = 1 + placement.digit
            depth[rows, cols][stroke] = placement.depth
            placements.append(placement)
        image = image + rng.normal(0, self.noise, image.shape)
        sample = {
            "image": torch.from_numpy(np.clip(image, 0, 1).astype(np.float32).transpose(2, 0, 1).copy()),
            "seg": torch.from_numpy(seg),
            "depth": torch.from_numpy(depth[None].copy()),
        }
        return sample, placements
