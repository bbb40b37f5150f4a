"""``synthetic_scenes``: procedurally rendered indoor scenes with exact seg, depth and normal labels.

Each sample is rendered on the fly by a vectorised ray-caster (numpy, float32), deterministically from
``(seed, split, index)``; no files are needed.

Scene: pinhole camera (focal 0.9·W, yaw ±0.25 rad, pitch −0.2…0.05 rad) at height 1–1.6 above a
floor; a back wall at depth 6–10; each side wall and the ceiling present with probability 0.6/0.6/0.5;
2–``max_objects`` objects resting on the floor inside the view frustum, each a sphere, a yaw-rotated
box, a vertical cylinder or a cone (radius 0.3–0.9). Classes (``CLASS_NAMES``): floor, wall, ceiling,
then one class per object shape.

Appearance is decorrelated from class: every surface gets two random RGB colours mixed by a random
pattern (flat, stripes, checker or a sum of sines, at random frequency and orientation in world
coordinates); Lambertian shading under a random directional light with ambient 0.15–0.35 and shadows
cast by the objects; distance fog of random density; Gaussian noise σ = ``noise``.

Labels (camera frame: x right, y up, z forward; visible normals point towards the camera):
- ``seg`` (H,W) int64: class id; −1 on ``seg_ignore_rate`` of the pixels, chosen on class boundaries
  first, then in random blobs.
- ``depth`` (1,H,W) float32: planar depth (camera z) × ``depth_scale``; 0 on ``hole_rate`` of the
  pixels, chosen on depth/class discontinuities first, then in random blobs (like NYUv2's holes).
- ``normal`` (3,H,W) float32: unit normals, all-zero on the same holes as depth.

Knobs for the balancers (``data.options`` of the vision config):
- task imbalance: ``depth_scale`` (e.g. 1000 = millimetres, multiplies the L1 loss scale) and
  ``loss_scales`` (task name → multiplier stored in ``TaskSpec.loss_scale`` and applied by
  :mod:`mtrl.vision.losses`; e.g. ``{"seg": 10.0}`` for IMTL's scale-invariance test);
- conflict: ``conflict > 0`` adds a 4th task ``"pseudo_depth"`` (kind ``"depth"``) whose target is
  ``(1.5 + 0.5·sin(2π·conflict·z))·depth_scale``, a non-monotone function of the true depth ``z``
  (``conflict`` = cycles per depth unit). Its regression needs depth features folded differently from the
  true-depth task, so the two compete for the shared encoder; larger ``conflict`` folds more often. 0 disables it.
  Measured on a tiny shared conv encoder after 40 EW steps (conflict=0.5): its gradient is still positively
  aligned with depth's (mean cos ≈ +0.45), so it is a capacity-competition knob rather than a source of
  negative cosines; those already arise between seg and normal (mean cos ≈ −0.22, min ≈ −0.57 at conflict=0,
  see ``tests/vision/test_synthetic.py::test_task_gradients_conflict_on_a_small_cnn``), and on the small model
  in the per-step minimum over task pairs (``test_task_gradients_conflict_on_the_small_model``). Targets that
  oppose depth outright (``c − z``, ``−z``, blends of them) do not give negative mean cosines either: each
  task's own decoder absorbs the sign (measured on the small model, width 8: mean cos +0.2 … +0.9 after
  40–300 EW steps), so a data-only knob cannot force conflict between tasks with separate heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from mtrl.vision.tasks import TaskSpec

__all__ = ["CLASS_NAMES", "SHAPES", "SyntheticScenes", "render_scene"]

SHAPES: tuple[str, ...] = ("sphere", "box", "cylinder", "cone")
CLASS_NAMES: tuple[str, ...] = ("floor", "wall", "ceiling", *SHAPES)
_SPLIT_IDS = {"train": 0, "val": 1}
_DEFAULT_LENGTH = {"train": 2000, "val": 500}
_BASE_TASKS = ("seg", "depth", "normal")
_EPS = 1e-4

Arr = NDArray[Any]  # float32 arrays (int64 for labels); dtypes are kept explicit in the code


def _rot_y(angle: float) -> Arr:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)


def _rot_x(angle: float) -> Arr:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)


def _safe_div(num: Arr, den: Arr) -> Arr:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(np.isfinite(out), out, np.inf).astype(np.float32)


def _sphere(o: Arr, d: Arr, center: Arr, radius: float) -> tuple[Arr, Arr]:
    """Hit distance ``t (N,)`` (inf = miss) and outward normal ``(N,3)`` of rays ``o + t·d``."""
    oc = o - center
    a = np.einsum("ni,ni->n", d, d)
    b = np.einsum("ni,ni->n", np.broadcast_to(oc, d.shape), d)
    c = np.einsum("ni,ni->n", np.broadcast_to(oc, d.shape), np.broadcast_to(oc, d.shape)) - radius**2
    disc = b * b - a * c
    t = _safe_div(-b - np.sqrt(np.maximum(disc, 0)), a)
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    hit = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    return t, (hit - center) / radius


def _box(o: Arr, d: Arr, center: Arr, half: Arr, yaw: float) -> tuple[Arr, Arr]:
    """Slab test on a box rotated by ``yaw`` about the vertical axis."""
    rot = _rot_y(yaw)  # local → world
    ol = (o - center) @ rot  # world → local: rotᵀ v, row-vector form
    dl = d @ rot
    t1 = _safe_div(-half - ol, dl)
    t2 = _safe_div(half - ol, dl)
    tmin = np.minimum(t1, t2)
    tmin = np.where(np.isnan(tmin), -np.inf, tmin)
    near = tmin.max(axis=1)
    far = np.maximum(t1, t2).min(axis=1)
    t = np.where((near <= far) & (near > _EPS), near, np.inf).astype(np.float32)
    axis = tmin.argmax(axis=1)
    normal_local = np.zeros_like(dl)
    rows = np.arange(len(dl))
    normal_local[rows, axis] = -np.sign(dl[rows, axis])
    return t, normal_local @ rot.T


def _cylinder(o: Arr, d: Arr, cx: float, cz: float, y0: float, y1: float, radius: float) -> tuple[Arr, Arr]:
    """Vertical cylinder from ``y0`` to ``y1`` with a top cap."""
    ox, oz = o[..., 0] - cx, o[..., 2] - cz
    oy = np.broadcast_to(o[..., 1], d.shape[:1])
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = ox * d[:, 0] + oz * d[:, 2]
    c = ox**2 + oz**2 - radius**2
    disc = b * b - a * c
    t_side = _safe_div(-b - np.sqrt(np.maximum(disc, 0)), a)
    y_side = oy + t_side * d[:, 1]
    t_side = np.where((disc >= 0) & (t_side > _EPS) & (y_side >= y0) & (y_side <= y1), t_side, np.inf)
    t_cap = _safe_div(y1 - oy, d[:, 1])
    cap_x, cap_z = ox + t_cap * d[:, 0], oz + t_cap * d[:, 2]
    t_cap = np.where((t_cap > _EPS) & (cap_x**2 + cap_z**2 <= radius**2), t_cap, np.inf)
    t = np.minimum(t_side, t_cap)
    ts = np.where(np.isfinite(t), t, 0)
    side_normal = np.stack([(ox + ts * d[:, 0]) / radius, np.zeros_like(ts), (oz + ts * d[:, 2]) / radius], axis=1)
    cap_normal = np.array([0, 1, 0], dtype=np.float32)
    return t, np.where((t_cap <= t_side)[:, None], cap_normal, side_normal).astype(np.float32)


def _cone(o: Arr, d: Arr, cx: float, cz: float, y0: float, y1: float, radius: float) -> tuple[Arr, Arr]:
    """Upright cone with apex at ``y1`` and base radius ``radius`` at ``y0`` (base on the floor, not rendered)."""
    k2 = (radius / (y1 - y0)) ** 2
    ox, oz = o[..., 0] - cx, o[..., 2] - cz
    q = y1 - np.broadcast_to(o[..., 1], d.shape[:1])
    a = d[:, 0] ** 2 + d[:, 2] ** 2 - k2 * d[:, 1] ** 2
    b = ox * d[:, 0] + oz * d[:, 2] + k2 * q * d[:, 1]
    c = ox**2 + oz**2 - k2 * q**2
    disc = b * b - a * c
    root = np.sqrt(np.maximum(disc, 0))
    best = np.full(d.shape[:1], np.inf, dtype=np.float32)
    for sign in (-1.0, 1.0):
        t = _safe_div(-b + sign * root, a)
        y = y1 - q + t * d[:, 1]
        best = np.where((disc >= 0) & (t > _EPS) & (y >= y0) & (y <= y1) & (t < best), t, best)
    ts = np.where(np.isfinite(best), best, 0)
    px, pz = ox + ts * d[:, 0], oz + ts * d[:, 2]
    py = q - ts * d[:, 1]  # y1 − y
    normal = np.stack([px, k2 * py, pz], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return best, normal.astype(np.float32)


@dataclass(frozen=True)
class _Object:
    shape: int  # index into SHAPES
    x: float
    z: float
    radius: float
    height: float
    yaw: float

    def intersect(self, o: Arr, d: Arr, floor_y: float) -> tuple[Arr, Arr]:
        name = SHAPES[self.shape]
        if name == "sphere":
            return _sphere(o, d, np.array([self.x, floor_y + self.radius, self.z], np.float32), self.radius)
        if name == "box":
            half = np.array([self.radius, self.height / 2, self.radius * 0.7], np.float32)
            center = np.array([self.x, floor_y + self.height / 2, self.z], np.float32)
            return _box(o, d, center, half, self.yaw)
        if name == "cylinder":
            return _cylinder(o, d, self.x, self.z, floor_y, floor_y + self.height, self.radius)
        return _cone(o, d, self.x, self.z, floor_y, floor_y + self.height, self.radius)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int = 8) -> Arr:
    """Blobby noise in [0, 1): uniform on a coarse grid, bilinearly upsampled to ``(H, W)``."""
    coarse = torch.from_numpy(rng.random((1, 1, height // cell + 2, width // cell + 2), dtype=np.float32))
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def _top_fraction(score: Arr, rate: float) -> NDArray[np.bool_]:
    """Mask of the ``round(rate·N)`` highest-scoring pixels."""
    flat = score.ravel()
    count = round(rate * flat.size)
    mask = np.zeros(flat.size, dtype=bool)
    if count > 0:
        mask[np.argpartition(-flat, count - 1)[:count]] = True
    return mask.reshape(score.shape)


def _edges(values: Arr, rel_tol: float | None) -> NDArray[np.bool_]:
    """Pixels whose 4-neighbour differs (by more than ``rel_tol`` relative, or at all when None)."""
    edge = np.zeros(values.shape, dtype=bool)
    for axis in (0, 1):
        a, b = np.swapaxes(values, 0, axis)[1:], np.swapaxes(values, 0, axis)[:-1]
        diff = (np.abs(a - b) > rel_tol * np.minimum(a, b)) if rel_tol is not None else (a != b)
        view = np.swapaxes(edge, 0, axis)
        view[1:] |= diff
        view[:-1] |= diff
    return edge


def _pattern(kind: NDArray[np.int64], freq: Arr, axes: Arr, phase: Arr, point: Arr) -> Arr:
    """Texture weight in [0, 1] per pixel; per-pixel kind 0 flat, 1 stripes, 2 checker, 3 sum of sines."""
    proj = np.einsum("ni,ni->n", point, axes[:, 0]) * freq + phase
    proj2 = np.einsum("ni,ni->n", point, axes[:, 1]) * freq
    stripes = 0.5 + 0.5 * np.sin(proj)
    checker = (np.floor(proj / np.pi) + np.floor(proj2 / np.pi)) % 2
    sines = 0.5 + 0.25 * (np.sin(proj) + np.sin(1.7 * proj2 + phase))
    choices = np.stack([np.zeros_like(proj), stripes, checker, sines], axis=1)
    return choices[np.arange(len(kind)), kind].astype(np.float32)


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    max_objects: int = 6,
    num_shapes: int = len(SHAPES),
    noise: float = 0.03,
) -> dict[str, Arr]:
    """Render one scene: ``image (H,W,3)`` in [0,1], ``seg (H,W)``, planar ``depth (H,W)``, ``normal (H,W,3)``.

    No holes or scaling here (see :class:`SyntheticScenes`). ``num_shapes`` keeps the first shapes of ``SHAPES``.
    """
    # Camera: rays o + t·d with d = R·(u, v, 1), so t is the planar depth.
    focal = 0.9 * width
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (cols + 0.5 - width / 2) / focal, -(rows + 0.5 - height / 2) / focal
    rays_cam = np.stack([u.ravel(), v.ravel(), np.ones(u.size, np.float32)], axis=1)  # (N,3)
    rot = _rot_y(rng.uniform(-0.25, 0.25)) @ _rot_x(rng.uniform(-0.2, 0.05))
    d = rays_cam @ rot.T
    o = np.zeros(3, np.float32)
    n_px = d.shape[0]

    floor_y = -rng.uniform(1.0, 1.6)
    back = rng.uniform(6.0, 10.0)
    left, right = rng.uniform(2.5, 5.0), rng.uniform(2.5, 5.0)
    t_best = np.full(n_px, np.inf, np.float32)
    cls = np.zeros(n_px, np.int64)
    surf = np.zeros(n_px, np.int64)
    normal = np.zeros((n_px, 3), np.float32)

    def take(t: Arr, n: Arr, class_id: int, surface: int) -> None:
        closer = t < t_best
        t_best[closer] = t[closer]
        cls[closer] = class_id
        surf[closer] = surface
        normal[closer] = np.broadcast_to(n, normal.shape)[closer]

    # Planes: (class, axis, offset, normal); side walls and ceiling are optional.
    planes = [(0, 1, floor_y, (0, 1, 0)), (1, 2, back, (0, 0, -1))]
    if rng.random() < 0.6:
        planes.append((1, 0, -left, (1, 0, 0)))
    if rng.random() < 0.6:
        planes.append((1, 0, right, (-1, 0, 0)))
    if rng.random() < 0.5:
        planes.append((2, 1, rng.uniform(1.2, 2.5), (0, -1, 0)))
    surface = 0
    for class_id, axis, offset, n_plane in planes:
        t = _safe_div(np.full(n_px, offset, np.float32), d[:, axis])
        take(np.where(t > _EPS, t, np.inf).astype(np.float32), np.array(n_plane, np.float32), class_id, surface)
        surface += 1

    objects = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        z = rng.uniform(2.5, back - 1.0)  # inside the view frustum (half-angle tan ≈ 0.56), between the walls
        x = float(np.clip(z * rng.uniform(-0.5, 0.5), -left + 0.6, right - 0.6))
        shape = int(rng.integers(num_shapes))
        objects.append(_Object(shape, x, z, rng.uniform(0.3, 0.9), rng.uniform(0.5, 1.8), rng.uniform(0, np.pi)))
    for obj in objects:
        t, n_obj = obj.intersect(o, d, floor_y)
        take(t, n_obj, 3 + obj.shape, surface)
        surface += 1

    # Appearance: per-surface colours and pattern, independent of the class.
    point = d * t_best[:, None]
    col_a = rng.uniform(0.05, 0.95, (surface, 3)).astype(np.float32)
    col_b = rng.uniform(0.05, 0.95, (surface, 3)).astype(np.float32)
    kind = rng.integers(0, 4, surface)
    freq = rng.uniform(1.5, 8.0, surface).astype(np.float32)
    axes = rng.normal(size=(surface, 2, 3)).astype(np.float32)
    axes /= np.linalg.norm(axes, axis=2, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, surface).astype(np.float32)
    w = _pattern(kind[surf], freq[surf], axes[surf], phase[surf], point)[:, None]
    albedo = col_a[surf] * (1 - w) + col_b[surf] * w

    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(0.4, 1.0), rng.uniform(-0.9, 0.2)], np.float32)
    light /= np.linalg.norm(light)
    lit = np.clip(normal @ light, 0, None)
    shadow_o = point + 1e-3 * normal
    shadow_d = np.broadcast_to(light, d.shape)
    in_shadow = np.zeros(n_px, bool)
    candidates = lit > 0
    for obj in objects:
        t, _ = obj.intersect(shadow_o[candidates], np.ascontiguousarray(shadow_d[candidates]), floor_y)
        in_shadow[candidates] |= np.isfinite(t)
    ambient = rng.uniform(0.15, 0.35)
    tint = rng.uniform(0.8, 1.0, 3).astype(np.float32)
    shade = ambient + (1 - ambient) * lit * (~in_shadow)
    image = albedo * shade[:, None] * tint
    fog = np.exp(-rng.uniform(0.0, 0.08) * t_best)[:, None]
    image = image * fog + (1 - fog) * rng.uniform(0.3, 0.8)
    image = image + rng.normal(0, noise, image.shape)

    return {
        "image": np.clip(image, 0, 1).astype(np.float32).reshape(height, width, 3),
        "seg": cls.reshape(height, width),
        "depth": t_best.reshape(height, width),
        "normal": (normal @ rot).astype(np.float32).reshape(height, width, 3),  # world → camera: Rᵀ n
    }


class SyntheticScenes(Dataset[dict[str, Tensor]]):
    """Procedural seg + depth + normal data set (see the module docstring), deterministic by ``(seed, split, index)``.

    Args:
        split: ``"train"`` or ``"val"`` (disjoint random streams).
        size: ``(H, W)`` of the rendered images.
        length: number of samples (default 2000 train / 500 val).
        seed: data set seed.
        num_classes: 4–7; the object shapes are the first ``num_classes − 3`` of ``SHAPES``.
        tasks: which of ``"seg"``, ``"depth"``, ``"normal"`` to provide (e.g. one for single-task runs).
        depth_scale: multiplier of depth targets (units; 1 = metres-like, 1000 = millimetres).
        loss_scales: task name → ``TaskSpec.loss_scale``.
        conflict: cycles per depth unit of the ``pseudo_depth`` task (0 = no such task).
        hole_rate: fraction of pixels with invalid depth/normal (exact, rounded to whole pixels).
        seg_ignore_rate: fraction of pixels labelled −1.
        max_objects: at most this many objects (at least 2).
        noise: std of the Gaussian image noise.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        size: tuple[int, int] = (64, 80),
        length: int | None = None,
        seed: int = 0,
        num_classes: int = len(CLASS_NAMES),
        tasks: Sequence[str] = _BASE_TASKS,
        depth_scale: float = 1.0,
        loss_scales: Mapping[str, float] | None = None,
        conflict: float = 0.0,
        hole_rate: float = 0.1,
        seg_ignore_rate: float = 0.03,
        max_objects: int = 6,
        noise: float = 0.03,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split={split!r}; valid splits: {tuple(_SPLIT_IDS)}")
        if not 4 <= num_classes <= len(CLASS_NAMES):
            raise ValueError(f"num_classes={num_classes}; valid: 4..{len(CLASS_NAMES)} (classes {CLASS_NAMES})")
        bad = [t for t in tasks if t not in _BASE_TASKS]
        if bad or not tasks:
            raise ValueError(f"tasks={tuple(tasks)}; valid: a non-empty subset of {_BASE_TASKS}")
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"size={size}; expected (H, W) with H, W >= 8")
        for name, value in (("hole_rate", hole_rate), ("seg_ignore_rate", seg_ignore_rate)):
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value}; valid: 0 <= {name} < 1")
        if depth_scale <= 0 or conflict < 0 or max_objects < 2 or noise < 0:
            raise ValueError(
                f"need depth_scale > 0, conflict >= 0, max_objects >= 2, noise >= 0; "
                f"got {depth_scale}, {conflict}, {max_objects}, {noise}"
            )
        self.split = split
        self.size = (int(size[0]), int(size[1]))
        self.length = _DEFAULT_LENGTH[split] if length is None else int(length)
        self.seed = seed
        self.num_classes = num_classes
        self.depth_scale = depth_scale
        self.conflict = conflict
        self.hole_rate = hole_rate
        self.seg_ignore_rate = seg_ignore_rate
        self.max_objects = max_objects
        self.noise = noise
        scales = dict(loss_scales or {})
        channels = {"seg": num_classes, "depth": 1, "normal": 3}
        names = [t for t in _BASE_TASKS if t in tasks] + (["pseudo_depth"] if conflict > 0 else [])
        unknown = sorted(set(scales) - set(names))
        if unknown:
            raise ValueError(f"loss_scales for unknown tasks {unknown}; tasks: {names}")
        self.tasks: tuple[TaskSpec, ...] = tuple(
            TaskSpec(n, "depth" if n == "pseudo_depth" else n, channels.get(n, 1), scales.get(n, 1.0))  # type: ignore[arg-type]
            for n in names
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        height, width = self.size
        scene = render_scene(
            rng, height, width, max_objects=self.max_objects, num_shapes=self.num_classes - 3, noise=self.noise
        )
        seg, depth, normal = scene["seg"], scene["depth"], scene["normal"]
        edge = _edges(depth, 0.08) | _edges(seg, None)
        hole = _top_fraction(edge + _smooth_noise(rng, height, width), self.hole_rate)
        ignore = _top_fraction(_edges(seg, None) + _smooth_noise(rng, height, width), self.seg_ignore_rate)
        sample = {"image": torch.from_numpy(np.ascontiguousarray(scene["image"].transpose(2, 0, 1)))}
        names = {t.name for t in self.tasks}
        if "seg" in names:
            sample["seg"] = torch.from_numpy(np.where(ignore, -1, seg))
        depth_scaled = np.where(hole, 0, depth * self.depth_scale).astype(np.float32)
        if "depth" in names:
            sample["depth"] = torch.from_numpy(depth_scaled[None])
        if "normal" in names:
            sample["normal"] = torch.from_numpy(np.where(hole[None], 0, normal.transpose(2, 0, 1)).astype(np.float32))
        if "pseudo_depth" in names:
            pseudo = (1.5 + 0.5 * np.sin(2 * np.pi * self.conflict * depth)) * self.depth_scale
            sample["pseudo_depth"] = torch.from_numpy(np.where(hole, 0, pseudo).astype(np.float32)[None])
        return sample
