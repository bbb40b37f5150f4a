"""Dilated ResNet-50 encoder (output stride 8) with one ASPP head per task: the LibMTL protocol.

Encoder: ResNet-50 (He et al., CVPR 2016, arXiv 1512.03385) with the strides of ``layer3``/``layer4``
replaced by dilations 2/4 (output stride 8), as LibMTL's ``resnet_dilated('resnet50')`` and
torchvision's ``replace_stride_with_dilation=[False, True, True]``. Heads: DeepLabV3's
``DeepLabHead`` (Chen et al., arXiv 1706.05587): ASPP with rates ``(12, 24, 36)`` + image pooling →
256 channels → 3×3 conv → BN → ReLU → 1×1 conv to ``C_t``; predictions are upsampled bilinearly to
the input size (LibMTL ``process_preds``).

Pretrained weights are never downloaded: ``pretrained_path`` names a LOCAL file holding a
torchvision-layout ResNet-50 state dict (``conv1.weight``, ``layer1.0.conv1.weight``, …; ``fc.*`` is
ignored; a ``{"state_dict": ...}`` wrapper is accepted).

``width`` scales every channel count (64 = ResNet-50; smaller values only for tests).
Shapes: ``x (B, 3, H, W)`` → ``z (B, 32·width, ⌈H/8⌉, ⌈W/8⌉)`` → ``{task: (B, C_t, H, W)}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtrl.vision.models.base import MultiTaskDenseModel, TaskLike

__all__ = ["ASPPHead", "DilatedResNet50", "ResNetASPP"]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3×3 conv): ``1×1 → 3×3 (stride, dilation) → 1×1 (×4)``."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)  # type: ignore[no-any-return]


class DilatedResNet50(nn.Module):
    """ResNet-50 trunk without ``avgpool``/``fc``, dilated to output stride 8 (torchvision names)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive int (64 = ResNet-50), got {width}")
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._c = width
        self._dilation = 1
        self.layer1 = self._layer(width, 3, stride=1, dilate=False)
        self.layer2 = self._layer(2 * width, 4, stride=2, dilate=False)
        self.layer3 = self._layer(4 * width, 6, stride=2, dilate=True)
        self.layer4 = self._layer(8 * width, 3, stride=2, dilate=True)
        self.out_channels = 32 * width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _layer(self, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous = self._dilation
        if dilate:  # torchvision's replace_stride_with_dilation: first block keeps the previous dilation
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._c != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self._c, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [Bottleneck(self._c, planes, stride, previous, downsample)]
        self._c = planes * 4
        layers += [Bottleneck(self._c, planes, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # type: ignore[no-any-return]

    def load_pretrained(self, path: str | Path) -> None:
        """Load a local torchvision-layout ResNet-50 state dict (``fc.*`` ignored); never downloads."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(
                f"pretrained_path {str(p)!r} is not a file; give a local torchvision-layout ResNet-50 state dict "
                "(weights are never downloaded), or pretrained_path=null to train from scratch"
            )
        state = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{str(p)!r} holds a {type(state).__name__}; expected a state dict (mapping of tensors)")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.state_dict()
        # torchvision's v1 weights (resnet50-19c8e357.pth, LibMTL's download) predate BatchNorm's
        # ``num_batches_tracked`` buffer; it only counts updates (unused with the default momentum), so a missing
        # one keeps this model's value. Every other key must match exactly.
        for key in set(own) - set(state):
            if key.endswith(".num_batches_tracked"):
                state[key] = own[key]
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
        if missing or unexpected or wrong:
            shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in wrong[:5]]
            raise ValueError(
                f"{str(p)!r} does not match a ResNet-50 trunk of width {self.out_channels // 32} (torchvision layout): "
                f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
                f"{len(wrong)} wrong shapes {shapes}"
            )
        self.load_state_dict(state)


def _cbr(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = 0 if kernel == 1 else dilation
    conv = nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


class _ASPPPooling(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_cbr(c_in, c_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPPHead(nn.Module):
    """DeepLabV3 head: ASPP (1×1, three dilated 3×3 at ``rates``, image pooling) → project (+dropout 0.5)
    → 3×3 conv → BN → ReLU → 1×1 conv. ``(B, c_in, h, w) → (B, out_channels, h, w)``."""

    def __init__(self, c_in: int, out_channels: int, rates: Sequence[int] = (12, 24, 36), inner: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(*_cbr(c_in, inner))]
        branches += [nn.Sequential(*_cbr(c_in, inner, 3, r)) for r in rates]
        branches.append(_ASPPPooling(c_in, inner))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(*_cbr(len(branches) * inner, inner), nn.Dropout(0.5))
        self.head = nn.Sequential(*_cbr(inner, inner, 3), nn.Conv2d(inner, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.project(torch.cat([b(x) for b in self.branches], dim=1)))  # type: ignore[no-any-return]


class ResNetASPP(MultiTaskDenseModel):
    """Shared dilated ResNet-50 (OS 8) + one :class:`ASPPHead` per task (LibMTL's NYUv2/Cityscapes model)."""

    def __init__(self, tasks: Sequence[TaskLike], width: int = 64, pretrained_path: str | Path | None = None) -> None:
        super().__init__(tasks)
        encoder = DilatedResNet50(width)
        if pretrained_path is not None:
            encoder.load_pretrained(pretrained_path)
        self.encoder = encoder
        inner = 256 * width // 64
        self.decoders = nn.ModuleDict(
            {t.name: ASPPHead(encoder.out_channels, int(t.out_channels), inner=max(inner, 8)) for t in tasks}
        )
