"""Mixed precision for the vision trainer: which autocast dtype a run gets, and which balancers fp16 allows.

bf16 autocast needs no loss scaling. fp16 needs a ``GradScaler``: the engine then receives the losses
multiplied by the current scale ``S`` (a power of 2 that the scaler changes during training), every
``.grad`` it writes is divided by ``S`` in ``scaler.step``, and a step whose gradients overflowed is
skipped. That is exact only for a balancer whose shared update is **scale-equivariant**:
``d(S·L) = S·d(L)`` for every ``S > 0`` (heads and the balancer's own parameters likewise), with a state
that does not depend on ``S`` (the scale changes between steps). Each balancer class states whether it is,
with the derivation beside it, as :attr:`Balancer.loss_scale_problem <mtrl.balancers.Balancer.loss_scale_problem>`
(``None``, or why not; hyper-parameters decide it for ``mgda``, ``nash_mtl`` and ``upgrad``). With
``g_t = ∇L_t``, the scaled losses give rows ``S g_t`` and ``G → S² G``; the loss closures (``sgsu``,
``dgr``) and FAMO's post-step losses are evaluated unscaled. ``tests/vision/test_amp.py`` checks the
allowed balancers numerically, and the failure of the refused ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtrl.balancers import Balancer
from mtrl.config import ConfigError

__all__ = ["AmpChoice", "fp16_refusal", "make_grad_scaler", "resolve_amp"]


def fp16_refusal(balancer: Balancer) -> str | None:
    """``None`` when ``balancer`` trains exactly under fp16 + GradScaler, else why it does not
    (:attr:`~mtrl.balancers.Balancer.loss_scale_problem`; ``dgr`` states its own, whatever its base)."""
    return balancer.loss_scale_problem


@dataclass(frozen=True)
class AmpChoice:
    """The autocast dtype of a run (``None`` = full precision) and why it was chosen."""

    dtype: torch.dtype | None
    note: str

    @property
    def needs_scaler(self) -> bool:
        """fp16 needs a GradScaler (bf16 has float32's exponent range)."""
        return self.dtype == torch.float16


def _bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"  # CPU autocast supports bf16 (slow; used to test the AMP path)


def resolve_amp(amp: str, device: torch.device, balancer: Balancer) -> AmpChoice:
    """The autocast dtype for ``amp`` ∈ {auto, bf16, fp16, off} on ``device`` with ``balancer``.

    ``auto``: bf16 on a CUDA device that supports it; else fp16 when the balancer is scale-equivariant
    (:func:`fp16_refusal`), else off; full precision on every other device. ``bf16``/``fp16`` are taken as
    given on any device (CPU autocast works and lets the AMP path be tested without a GPU); ``fp16`` with a
    balancer that is not scale-equivariant raises :class:`ConfigError`.
    """
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ConfigError(f"amp={amp!r}; valid choices: auto, bf16, fp16, off")
    if amp == "off":
        return AmpChoice(None, "amp=off: full precision")
    refusal = fp16_refusal(balancer)
    if amp == "bf16":
        if not _bf16_supported(device):
            raise ConfigError(f"amp=bf16 but {device} does not support bfloat16; use amp=off (or amp=fp16)")
        return AmpChoice(torch.bfloat16, f"amp=bf16 on {device}")
    if amp == "fp16":
        if refusal is not None:
            raise ConfigError(
                f"amp=fp16 (GradScaler) would train balancer {balancer.name!r} incorrectly: {refusal}. "
                "Use amp=bf16 (no loss scaling) or amp=off"
            )
        return AmpChoice(torch.float16, f"amp=fp16 with a GradScaler on {device}")
    if device.type != "cuda":
        return AmpChoice(None, f"amp=auto: full precision on {device}")
    if _bf16_supported(device):
        return AmpChoice(torch.bfloat16, f"amp=auto: bf16 on {device}")
    if refusal is None:
        return AmpChoice(torch.float16, f"amp=auto: fp16 with a GradScaler on {device} (no bf16 support)")
    return AmpChoice(
        None,
        f"amp=auto: full precision on {device}: no bf16 support, and fp16 loss scaling is not exact for "
        f"balancer {balancer.name!r} ({refusal})",
    )


def make_grad_scaler(choice: AmpChoice, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 autocast on ``device`` (None otherwise)."""
    return torch.amp.GradScaler(device.type) if choice.needs_scaler else None
