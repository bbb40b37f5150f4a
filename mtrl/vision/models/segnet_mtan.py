"""SegNet with task attention modules (MTAN), the model of the Nash-MTL / FAMO / Aligned-MTL protocol.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019 (arXiv 1803.10704),
ported from the SegNet-MTAN used by the Nash-MTL code (``experiments/nyuv2/models.py``), filters
``[64, 128, 256, 512, 512]``, 3×3 conv + BatchNorm + ReLU blocks, max-pool/max-unpool with indices.

What is shared and what is task-specific:
- shared (``self.encoder``, receives ``d``): the SegNet encoder/decoder blocks and — as in the
  reference code, where they sit in ``shared_modules()`` — the attention-path convs
  ``enc_att_block``/``dec_att_block`` that every task's attention path applies;
- task-specific (``self.decoders[task]``, receives its own task's gradient): the task attention
  masks (1×1 conv → BN → ReLU → 1×1 conv → BN → sigmoid) at each of the 5 encoder and 5 decoder
  stages, and the prediction head (3×3 conv → 1×1 conv).
Note (LibMTL deviation): LibMTL's port puts the task attention modules inside its "encoder", so its
Jacobian methods treat them as shared; here they are task-specific, as the method defines them.

Representation: ``features(x)`` returns every shared tensor the attention paths read (per stage the
two encoder conv outputs, the unpooled input and the output of the shared decoder stage), flattened
and concatenated, ``z (B, D)``. Because the attention-path convs are shared but applied *after* ``z``,
gradients w.r.t. ``z`` do not reach them; ``representation_exact`` is therefore False unless
``share_attention_convs=False`` (one copy per task, a documented deviation), and the trainer refuses
representation-level balancers on a model whose representation is not exact.

Shapes: ``x (B, 3, H, W)`` with ``H, W`` divisible by 32; outputs ``{task: (B, C_t, H, W)}`` (logits for
segmentation, raw depth, un-normalised normals; the losses normalise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtrl.vision.models.base import MultiTaskDenseModel, TaskLike

__all__ = ["SegNetMTAN"]

FILTERS = (64, 128, 256, 512, 512)


def _norm(channels: int, norm: Literal["batch", "group"]) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(min(32, channels), channels)
    raise ValueError(f"unknown norm {norm!r}; valid choices: 'batch', 'group'")


def _conv(c_in: int, c_out: int, norm: Literal["batch", "group"]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), _norm(c_out, norm), nn.ReLU(inplace=True))


def _att(c_in: int, c_mid: int, c_out: int, norm: Literal["batch", "group"]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_mid, 1), _norm(c_mid, norm), nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_out, 1), _norm(c_out, norm), nn.Sigmoid(),
    )  # fmt: skip


def _att_convs(f: Sequence[int], norm: Literal["batch", "group"]) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The attention-path convs (shared in MTAN): ``enc_att_block[j]: f[j] → f[min(j+1, 4)]`` and
    ``dec_att_block[s]: f[s] → f[max(s-1, 0)]``."""
    enc = nn.ModuleList([_conv(f[j], f[min(j + 1, 4)], norm) for j in range(5)])
    dec = nn.ModuleList([_conv(f[s], f[max(s - 1, 0)], norm) for s in range(5)])
    return enc, dec


def _at(modules: nn.Module, key: str, index: int) -> nn.Module:
    """``modules[key][index]`` of a ModuleDict of ModuleLists (typed access)."""
    return cast(nn.ModuleList, cast(nn.ModuleDict, modules)[key])[index]


class SegNetMTAN(MultiTaskDenseModel):
    """SegNet-MTAN: shared SegNet + per-task soft-attention paths (see module docstring)."""

    def __init__(
        self,
        tasks: Sequence[TaskLike],
        filters: Sequence[int] = FILTERS,
        norm: Literal["batch", "group"] = "batch",
        share_attention_convs: bool = True,
    ) -> None:
        super().__init__(tasks)
        f = tuple(int(c) for c in filters)
        if len(f) != 5 or min(f) < 1:
            raise ValueError(f"filters must be 5 positive ints (e.g. {list(FILTERS)}), got {list(filters)}")
        self.filters = f
        self.share_attention_convs = share_attention_convs
        self.representation_exact = not share_attention_convs

        def lo(s: int) -> int:  # channels of decoder stage s (stage 0 keeps f[0])
            return f[max(s - 1, 0)]

        def convs(c: int, s: int) -> nn.Sequential:  # one conv at the two finest stages, two below
            return nn.Sequential(*[_conv(c, c, norm) for _ in range(1 if s < 2 else 2)])

        encoder = nn.ModuleDict(
            {
                "enc_block": nn.ModuleList([_conv(3 if s == 0 else f[s - 1], f[s], norm) for s in range(5)]),
                "enc_conv": nn.ModuleList([convs(f[s], s) for s in range(5)]),
                "dec_block": nn.ModuleList([_conv(f[s], lo(s), norm) for s in range(5)]),
                "dec_conv": nn.ModuleList([convs(lo(s), s) for s in range(5)]),
            }
        )
        if share_attention_convs:
            encoder["enc_att_block"], encoder["dec_att_block"] = _att_convs(f, norm)
        self.encoder = encoder
        decoders = {}
        for t in tasks:
            head = nn.ModuleDict(
                {
                    "enc_att": nn.ModuleList([_att(f[0] if j == 0 else 2 * f[j], f[j], f[j], norm) for j in range(5)]),
                    "dec_att": nn.ModuleList([_att(f[s] + lo(s), lo(s), lo(s), norm) for s in range(5)]),
                    "pred": nn.Sequential(nn.Conv2d(f[0], f[0], 3, padding=1), nn.Conv2d(f[0], int(t.out_channels), 1)),
                }
            )
            if not share_attention_convs:
                head["enc_att_block"], head["dec_att_block"] = _att_convs(f, norm)
            decoders[t.name] = head
        self.decoders = nn.ModuleDict(decoders)
        self._shapes: list[tuple[int, ...]] = []

    def features(self, x: Tensor) -> Tensor:
        """``z (B, D)``: the shared tensors read by the attention paths, flattened and concatenated."""
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if height % 32 or width % 32:
            raise ValueError(f"SegNet-MTAN needs H and W divisible by 32 (5 poolings); got {height}×{width}")
        self._input_size = (height, width)
        enc = self.encoder
        feats: list[Tensor] = []
        h, indices = x, []
        for i in range(5):
            a = _at(enc, "enc_block", i)(h)
            b = _at(enc, "enc_conv", i)(a)
            h, idx = F.max_pool2d(b, 2, 2, return_indices=True)
            indices.append(idx)
            feats += [a, b]
        for j in range(5):
            s = 4 - j
            up = F.max_unpool2d(h, indices[s], (2, 2), (2, 2))
            h = _at(enc, "dec_conv", s)(_at(enc, "dec_block", s)(up))
            feats += [up, h]
        self._shapes = [tuple(t.shape[1:]) for t in feats]
        return torch.cat([t.reshape(t.shape[0], -1) for t in feats], dim=1)

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        """Run every task's attention path over the shared tensors packed in ``z (B, D)``."""
        if not self._shapes or self._input_size is None:
            raise ValueError("decode(z) needs the feature layout: call features(x) first (or use forward(x))")
        sizes = [int(torch.Size(s).numel()) for s in self._shapes]
        parts = [p.reshape(z.shape[0], *s) for p, s in zip(torch.split(z, sizes, dim=1), self._shapes, strict=True)]
        enc_a, enc_b = parts[0:10:2], parts[1:10:2]
        dec_up, dec_out = parts[10::2], parts[11::2]
        out = {}
        for name in self.task_names:
            head = self.decoders[name]
            convs = self.encoder if self.share_attention_convs else head
            att = enc_a[0]  # replaced at stage 0
            for j in range(5):
                inp = enc_a[j] if j == 0 else torch.cat([enc_a[j], att], dim=1)
                masked = _at(head, "enc_att", j)(inp) * enc_b[j]
                att = F.max_pool2d(_at(convs, "enc_att_block", j)(masked), 2, 2)
            for j in range(5):
                s = 4 - j
                att = F.interpolate(att, scale_factor=2, mode="bilinear", align_corners=True)
                att = _at(convs, "dec_att_block", s)(att)
                att = _at(head, "dec_att", s)(torch.cat([dec_up[j], att], dim=1)) * dec_out[j]
            out[name] = cast(nn.ModuleDict, head)["pred"](att)
        return out
