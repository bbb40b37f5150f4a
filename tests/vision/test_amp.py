"""Mixed precision: the fp16 (GradScaler) decision table, numerical loss-scale equivariance of the balancers it
allows (and non-equivariance of some it refuses), amp resolution, and float32 representation gradients under
CPU bf16 autocast in the trainer's own step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from mtrl.balancers import BALANCERS, Balancer, make_balancer
from mtrl.config import ConfigError, update_config
from mtrl.engine import GradientEngine, make_loss_fn
from mtrl.vision.amp import fp16_refusal, resolve_amp
from mtrl.vision.config import VisionConfig
from mtrl.vision.data.synthetic import SyntheticScenes
from mtrl.vision.models import make_model
from mtrl.vision.step import BalancedStep
from mtrl.vision.trainer import VisionTrainer

T = 3
#: GradScaler scales are powers of two and change during training (growth ×2, backoff ×0.5).
SCALES = (2.0**16, 2.0**3, 2.0**11, 0.5)

#: (key, hparams) trained exactly under fp16 loss scaling.
EQUIVARIANT = [
    ("ew", {}), ("ew", {"mean": True}), ("rlw", {}), ("famo", {}), ("pcgrad", {}), ("cagrad", {}), ("graddrop", {}),
    ("imtl_g", {}), ("aligned_mtl", {}), ("aligned_mtl_ub", {}), ("mgda", {}), ("mgda_ub", {}),
    ("nash_mtl", {"max_norm": 0.0}), ("upgrad", {"norm_eps": 0.0}),
]  # fmt: skip
#: (key, hparams) refused, each for a reason visible in a few steps of the toy problem below.
NOT_EQUIVARIANT = [
    ("nash_mtl", {}), ("mgda", {"normalization": "l2"}), ("mgda", {"normalization": "loss"}), ("uw", {}),
    ("imtl", {"lr": 0.1}), ("imtl_l", {"lr": 0.1}), ("sgsu", {"inner_lr": 0.1}), ("dgr", {}),
    ("task_tensioner", {"window": 1}), ("gradnorm", {}),
]  # fmt: skip


class Toy(nn.Module):
    """Shared ``tanh(Linear(6→5))`` and one ``Linear(5→1)`` head per task; positive per-task losses.

    float64, so that what is compared is the maths: in float32, ``log(S·L)`` (FAMO) rounds at ``eps·log S``.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(6, 5, dtype=torch.float64)
        self.heads = nn.ModuleList([nn.Linear(5, 1, dtype=torch.float64) for _ in range(T)])

    def features(self, x: Tensor) -> Tensor:
        return torch.tanh(self.trunk(x))

    def decode(self, z: Tensor) -> Tensor:
        return torch.cat([h(z) for h in self.heads], dim=1)  # (B, T)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.features(x))


def _losses(pred_BT: Tensor, y_BT: Tensor) -> Tensor:
    return ((pred_BT - y_BT) ** 2).mean(0) + 0.05  # (T,) strictly positive


def _run(key: str, hparams: dict[str, object], scales: tuple[float, ...]) -> list[list[Tensor]]:
    """Engine steps with losses × ``scales[k]``; returns every step's .grad of the shared and head parameters,
    divided by the scale (what ``GradScaler.step`` applies). The trainer's conventions: the loss closure and
    FAMO's post-step losses are unscaled."""
    model = Toy()
    balancer: Balancer = make_balancer(key, T, **hparams)  # type: ignore[arg-type]
    engine = GradientEngine(balancer)
    shared, task = list(model.trunk.parameters()), list(model.heads.parameters())
    gen = torch.Generator().manual_seed(1)
    out = []
    for scale in scales:
        x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
        y = torch.randn(8, T, generator=gen, dtype=torch.float64)
        z = model.features(x)
        losses = _losses(model.decode(z), y)
        def compute(forward: Callable[..., Tensor], x: Tensor = x, y: Tensor = y) -> Tensor:
            return _losses(forward(x), y)

        loss_fn = make_loss_fn(model, shared, task, compute)
        engine.backward(losses * scale, shared, task, features=z, loss_fn=loss_fn, heads=list(model.heads))
        out.append([p.grad.detach().clone() / scale for p in shared + task])  # type: ignore[union-attr]
        engine.post_step(_losses(model(x + 0.01), y).detach())
    return out


def test_the_decision_table_covers_every_registered_balancer() -> None:
    """Every registered balancer states its own loss-scale equivariance (none falls back to the default)."""
    for key in BALANCERS:
        assert "not been analysed" not in str(fp16_refusal(make_balancer(key, T))), key
    for key, hparams in EQUIVARIANT:
        assert fp16_refusal(make_balancer(key, T, **hparams)) is None, key  # type: ignore[arg-type]
    for key, hparams in NOT_EQUIVARIANT:
        reason = fp16_refusal(make_balancer(key, T, **hparams))  # type: ignore[arg-type]
        assert reason, key


@pytest.mark.parametrize(("key", "hparams"), EQUIVARIANT, ids=[f"{k}{h or ''}" for k, h in EQUIVARIANT])
def test_allowed_balancers_are_loss_scale_equivariant(key: str, hparams: dict[str, object]) -> None:
    """d(S·L) = S·d(L) at every step, for a scale that changes between steps (as the GradScaler's does)."""
    scaled = _run(key, hparams, SCALES)
    plain = _run(key, hparams, (1.0,) * len(SCALES))
    for step, (a, b) in enumerate(zip(scaled, plain, strict=True)):
        for ga, gb in zip(a, b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-14, msg=f"{key} step {step}")


@pytest.mark.parametrize(("key", "hparams"), NOT_EQUIVARIANT, ids=[f"{k}{h or ''}" for k, h in NOT_EQUIVARIANT])
def test_refused_balancers_are_not_loss_scale_equivariant(key: str, hparams: dict[str, object]) -> None:
    """The table is not over-cautious: each refused balancer's unscaled update differs from its fp32 update."""
    scaled = _run(key, hparams, SCALES)
    plain = _run(key, hparams, (1.0,) * len(SCALES))
    worst = max(
        float((ga - gb).norm() / gb.norm().clamp_min(1e-12))
        for a, b in zip(scaled, plain, strict=True)
        for ga, gb in zip(a[:2], b[:2], strict=True)  # the shared parameters
    )
    assert worst > 1e-2, (key, worst)


def test_amp_resolution_refuses_fp16_for_non_equivariant_balancers() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match=r"amp=fp16 .*'nash_mtl'.*max_norm.*amp=bf16.*amp=off"):
        resolve_amp("fp16", cpu, make_balancer("nash_mtl", T))
    assert resolve_amp("fp16", cpu, make_balancer("pcgrad", T)).dtype == torch.float16
    assert resolve_amp("bf16", cpu, make_balancer("sgsu", T)).dtype == torch.bfloat16  # bf16 needs no scaler
    assert resolve_amp("auto", cpu, make_balancer("ew", T)).dtype is None  # auto: full precision off CUDA
    assert resolve_amp("off", cpu, make_balancer("ew", T)).dtype is None


def test_auto_falls_back_to_full_precision_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA device without bf16: fp16 for scale-equivariant balancers, full precision (with a note) otherwise."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    cuda = torch.device("cuda")
    assert resolve_amp("auto", cuda, make_balancer("cagrad", T)).dtype == torch.float16
    choice = resolve_amp("auto", cuda, make_balancer("dgr", T))
    assert choice.dtype is None and "full precision" in choice.note and "'dgr'" in choice.note
    with pytest.raises(ConfigError, match="does not support bfloat16"):
        resolve_amp("bf16", cuda, make_balancer("ew", T))


def test_trainer_refuses_fp16_at_start_up(tmp_path: Path) -> None:
    cfg = update_config(
        VisionConfig(),
        {"data": {"size": [32, 40], "train_length": 8, "val_length": 4}, "model": {"width": 4},
         "balancer": {"name": "dgr"}, "amp": "fp16", "device": "cpu", "logdir": str(tmp_path), "progress": False},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="amp=fp16"):
        VisionTrainer(cfg)


@pytest.mark.parametrize("key", ["mgda_ub", "imtl"])
def test_representation_gradients_are_float32_under_bf16_autocast(key: str) -> None:
    """The trainer's step under (CPU) bf16 autocast: the convolutions run in bf16, but the engine gets a float32
    z, so the representation-level blocks ∇_z S_t it builds G from are float32; training still works."""
    data = SyntheticScenes("train", size=(32, 40), length=4, seed=0)
    samples = [data[i] for i in range(4)]
    x = torch.stack([s["image"] for s in samples])
    targets = {t.name: torch.stack([s[t.name] for s in samples]) for t in data.tasks}
    torch.manual_seed(0)
    model = make_model("small", data.tasks, width=8)
    step = BalancedStep(
        model, data.tasks, make_balancer(key, 3), torch.optim.Adam(model.parameters(), lr=3e-3),
        amp_dtype=torch.bfloat16,
    )  # fmt: skip
    seen: list[tuple[torch.dtype, list[torch.dtype]]] = []
    backward = step.engine.backward
    first_conv = model.encoder.get_submodule("0.0")

    def spy(losses: Tensor, shared: list[Tensor], task: list[Tensor], **kwargs: object):  # type: ignore[no-untyped-def]
        z = kwargs["features"]
        assert isinstance(z, Tensor)
        blocks = [torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in losses]
        seen.append((z.dtype, [b.dtype for b in blocks]))
        return backward(losses, shared, task, **kwargs)  # type: ignore[arg-type]

    step.engine.backward = spy  # type: ignore[method-assign,assignment]
    with torch.no_grad(), step.autocast():
        before = step.losses(model(x), targets)
        assert first_conv(x).dtype == torch.bfloat16  # the model really runs in bf16
    for _ in range(8):
        _, report = step(x, targets)
    assert report.strategy == "representation"
    assert len(seen) == 8
    assert all(z == torch.float32 and all(b == torch.float32 for b in blocks) for z, blocks in seen), seen
    with torch.no_grad(), step.autocast():
        after = step.losses(model(x), targets)
    assert after.sum() < before.sum()
