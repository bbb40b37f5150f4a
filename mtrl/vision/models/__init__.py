"""Multi-task dense models: shared encoder + per-task decoders, in plain torch.

>>> model = make_model("small", tasks, width=16)
>>> preds = model(x)  # {task: (B, C_task, H, W)}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mtrl.vision.models.base import MultiTaskDenseModel, TaskLike
from mtrl.vision.models.resnet_aspp import ResNetASPP
from mtrl.vision.models.segnet_mtan import FILTERS, SegNetMTAN
from mtrl.vision.models.small import SmallDenseNet

__all__ = ["MODELS", "MultiTaskDenseModel", "ResNetASPP", "SegNetMTAN", "SmallDenseNet", "make_model"]

#: Model keys: ``small`` (CPU tests / synthetic), ``segnet_mtan`` (MTAN-line protocol), ``resnet50_aspp`` (LibMTL).
MODELS: dict[str, type[MultiTaskDenseModel]] = {
    "small": SmallDenseNet,
    "segnet_mtan": SegNetMTAN,
    "resnet50_aspp": ResNetASPP,
}


def make_model(
    name: str,
    tasks: Sequence[TaskLike],
    width: int | None = None,
    pretrained_path: str | Path | None = None,
    share_attention_convs: bool = True,
) -> MultiTaskDenseModel:
    """Build model ``name`` for ``tasks``. ``width``: base channels (small: 16; segnet_mtan: first filter,
    64 = the paper's ``[64, 128, 256, 512, 512]``; resnet50_aspp: 64 = ResNet-50); None = the default.
    ``pretrained_path`` (resnet50_aspp only): a LOCAL ResNet-50 state dict, never downloaded.
    ``share_attention_convs`` (segnet_mtan only): MTAN's shared attention-path convs (True, as the reference
    code) or one copy per task (False; makes ``features`` an exact representation for ``*_ub``/``imtl``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if pretrained_path is not None and name != "resnet50_aspp":
        raise ValueError(f"pretrained_path is only supported by 'resnet50_aspp', not {name!r}")
    if name == "small":
        return SmallDenseNet(tasks, width=width or 16)
    if name == "segnet_mtan":
        scale = (width or FILTERS[0]) / FILTERS[0]
        filters = [max(1, round(c * scale)) for c in FILTERS]
        return SegNetMTAN(tasks, filters=filters, share_attention_convs=share_attention_convs)
    return ResNetASPP(tasks, width=width or 64, pretrained_path=pretrained_path)
