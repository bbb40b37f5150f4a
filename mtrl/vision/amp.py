"""Mixed precision for the vision trainer: which autocast dtype a run gets, and which balancers fp16 allows.

bf16 autocast needs no loss scaling. fp16 needs a ``GradScaler``: the engine then receives the losses
multiplied by the current scale ``S`` (a power of 2 that the scaler changes during training), every
``.grad`` it writes is divided by ``S`` in ``scaler.step``, and a step whose gradients overflowed is
skipped. That is exact only for a balancer whose shared update is **scale-equivariant**:
``d(S·L) = S·d(L)`` for every ``S > 0`` (heads and the balancer's own parameters likewise), with a state
that does not depend on ``S`` (the scale changes between steps). :data:`FP16_EQUIVARIANCE` records the
analysis for every registered balancer; ``tests/vision/test_amp.py`` checks the allowed ones
numerically and checks that the table covers the registry.

Derivation (``g_t = ∇L_t``, so ``S·L`` gives rows ``S g_t``, ``G → S² G``):

- ``ew``, ``rlw`` (weights independent of ``L``): ``d = Σ w_t S g_t``. Equivariant.
- ``famo``: ``c = 1/Σ_t z_t/(S L_t) = S·c(L)``, weight of ``∇(S L_t)`` is ``c z_t/(S L_t)`` = unchanged, so
  ``d → S d``; ``post_step`` uses ``Δ = log(S L) − log L'`` whose common offset ``log S`` cancels in
  ``z ⊙ (Δ − zᵀΔ)``. Equivariant.
- Gramian weightings whose weights are invariant under ``G → S² G`` (then ``d = Σ w_t S g_t``):
  ``pcgrad`` (coefficients ``(g_i·g_j)/‖g_j‖²`` and signs), ``cagrad`` (works on ``G/mean diag``,
  relative thresholds only), ``imtl_g`` (cosine matrix, ``Σw = 1``), ``aligned_mtl``/``aligned_mtl_ub``
  (``B = σ V Λ^{-1/2} Vᵀ``: ``σ → Sσ``, ``Λ^{-1/2} → Λ^{-1/2}/S``; relative rank cut-off),
  ``mgda``/``mgda_ub`` with ``normalization="none"`` (the min-norm point of the simplex is invariant).
  Equivariant. ``graddrop``: sign purity ``Σg/Σ|g|`` invariant, kept sums scale with ``S``. Equivariant.
- Conditionally: ``nash_mtl`` (``α`` is computed on ``G/‖G‖_F`` and cosines: invariant) only without its
  clip ``‖d‖ ≤ max_norm`` (``max_norm <= 0``), which would bound ``S·d`` instead of ``d``; ``upgrad`` only
  with ``norm_eps = 0`` (the absolute threshold ``tr G ≥ norm_eps`` moves with ``S²``); ``mgda``/``mgda_ub``
  with ``l2``/``loss``/``loss+`` normalisers give ``d(S·L) = d(L)`` or ``d(L)/S`` (invariant, not
  equivariant): refused.
- Refused: ``uw`` and ``imtl_l``/``imtl`` (the learned log-scale ``s`` converges to ``∓log(S L)`` and its
  private Adam sees the ``S``-scaled gradient ``∂S_t/∂s``), ``dwa`` (softmax of loss ratios, changed when
  the scale changes between windows), ``gradnorm`` (its private Adam mixes gradients of different
  scales), ``task_tensioner`` (adds ``log10 L``, i.e. ``log10 S``, to its trend, and unit tensions that
  do not scale with ``S``), ``sgsu`` (the virtual step ``θ − a·S∇L`` is ``S`` times too long and the
  outer losses come from the unscaled closure), ``dgr`` (its regulariser gradient comes from the
  unscaled closure, then is divided by ``S``; with a scaled closure it would scale with ``S²``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mtrl.balancers import Balancer
from mtrl.config import ConfigError

__all__ = ["FP16_EQUIVARIANCE", "AmpChoice", "fp16_refusal", "make_grad_scaler", "resolve_amp"]


def _always(_: Balancer) -> str | None:
    return None


def _never(reason: str) -> Callable[[Balancer], str | None]:
    return lambda _: reason


def _mgda(balancer: Balancer) -> str | None:
    norm = getattr(balancer, "normalization", "none")
    if norm == "none":
        return None
    return f"normalization={norm!r} divides the gradients by S-scaled normalisers (use normalization='none')"


def _nash(balancer: Balancer) -> str | None:
    max_norm = float(getattr(balancer, "max_norm", 1.0))
    if max_norm <= 0:
        return None
    return f"the clip ||d|| <= max_norm={max_norm} would act on the S-scaled direction (max_norm=0 disables it)"


def _upgrad(balancer: Balancer) -> str | None:
    norm_eps = float(getattr(balancer, "norm_eps", 1e-4))
    if norm_eps == 0:
        return None
    return f"its absolute threshold trace(G) >= norm_eps={norm_eps} moves with S^2 (norm_eps=0 removes it)"


def _dgr(balancer: Balancer) -> str | None:
    return "its regulariser gradient comes from the unscaled loss closure (1/S after unscaling, S^2 if scaled)"


#: registry key → ``None`` when the balancer (with its hyper-parameters) is scale-equivariant under a
#: GradScaler, else the reason it is not (see the module docstring for the derivation).
FP16_EQUIVARIANCE: dict[str, Callable[[Balancer], str | None]] = {
    "ew": _always,
    "rlw": _always,
    "famo": _always,
    "pcgrad": _always,
    "cagrad": _always,
    "graddrop": _always,
    "imtl_g": _always,
    "aligned_mtl": _always,
    "aligned_mtl_ub": _always,
    "mgda": _mgda,
    "mgda_ub": _mgda,
    "nash_mtl": _nash,
    "upgrad": _upgrad,
    "uw": _never("its learned log-variance converges to log(S*L) and its Adam sees S-scaled gradients"),
    "imtl_l": _never("its learned loss scale converges to 1/(S*L) and its Adam sees S-scaled gradients"),
    "imtl": _never("its IMTL-L loss scale converges to 1/(S*L) and its Adam sees S-scaled gradients"),
    "dwa": _never("its softmax of loss ratios changes when the loss scale changes between windows"),
    "gradnorm": _never("its private Adam mixes gradient norms taken at different loss scales"),
    "task_tensioner": _never("it adds log10(S) to its trend and unit tensions that do not scale with S"),
    "sgsu": _never("its virtual step uses S-scaled gradients while the outer losses are unscaled"),
    "dgr": _dgr,
}


def fp16_refusal(balancer: Balancer) -> str | None:
    """``None`` when ``balancer`` trains exactly under fp16 + GradScaler, else why it does not."""
    rule = FP16_EQUIVARIANCE.get(balancer.name)
    if rule is None:
        return f"balancer {balancer.name!r} has not been analysed for loss-scale equivariance"
    return rule(balancer)


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
