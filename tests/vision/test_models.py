"""Vision models: output shapes per task, the shared/task parameter partition, the representation
z = features(x) being exact (gradients through z equal parameter gradients), local-only pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mtrl.vision.models import MODELS, MultiTaskDenseModel, ResNetASPP, SegNetMTAN, make_model
from mtrl.vision.tasks import TaskSpec

TASKS = (TaskSpec("seg", "seg", 5), TaskSpec("depth", "depth", 1), TaskSpec("normal", "normal", 3))
# (model key, width, input size): the smallest inputs each architecture accepts.
CASES = [("small", 8, (32, 40)), ("segnet_mtan", 4, (32, 64)), ("resnet50_aspp", 4, (32, 40))]


def _x(size: tuple[int, int], device: torch.device, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)


@pytest.mark.parametrize(("name", "width", "size"), CASES)
def test_output_shapes_per_task(name: str, width: int, size: tuple[int, int], device: torch.device) -> None:
    torch.manual_seed(0)
    model = make_model(name, TASKS, width=width).to(device)
    out = model(_x(size, device))
    assert list(out) == ["seg", "depth", "normal"]
    for t in TASKS:
        assert out[t.name].shape == (2, t.out_channels, *size)
        assert torch.isfinite(out[t.name]).all()


@pytest.mark.parametrize(("name", "width", "size"), CASES)
def test_shared_and_task_parameters_partition_the_model(name: str, width: int, size: tuple[int, int]) -> None:
    model = make_model(name, TASKS, width=width)
    shared = {id(p) for p in model.shared_parameters()}
    task = {id(p) for p in model.task_parameters()}
    assert shared and task and not shared & task
    assert shared | task == {id(p) for p in model.parameters()}
    assert len(model.shared_parameters()) + len(model.task_parameters()) == len(list(model.parameters()))
    groups = model.task_parameter_groups()
    assert list(groups) == ["seg", "depth", "normal"]
    assert [id(p) for g in groups.values() for p in g] == [id(p) for p in model.task_parameters()]


def _grads_direct_and_through_z(model: MultiTaskDenseModel, x: torch.Tensor) -> tuple[list, list]:
    weights = {t.name: torch.randn(t.out_channels, generator=torch.Generator().manual_seed(1)) for t in TASKS}

    def objective(preds: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum((preds[n] * w.view(1, -1, 1, 1)).square().mean() for n, w in weights.items())  # type: ignore[return-value]

    shared = model.shared_parameters()
    direct = torch.autograd.grad(objective(model(x)), shared, allow_unused=True)
    z = model.features(x)
    (g_z,) = torch.autograd.grad(objective(model.decode(z)), z, retain_graph=True)
    through = torch.autograd.grad(z, shared, grad_outputs=g_z, allow_unused=True)
    return list(direct), list(through)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: make_model("small", TASKS, width=8), id="small"),
        pytest.param(lambda: make_model("resnet50_aspp", TASKS, width=4), id="resnet50_aspp"),
        pytest.param(lambda: SegNetMTAN(TASKS, filters=(4, 8, 8, 16, 16), share_attention_convs=False), id="mtan"),
    ],
)
def test_representation_is_exact(model) -> None:  # type: ignore[no-untyped-def]
    """∇_θ L = (∂z/∂θ)ᵀ ∇_z L: the representation strategy gives the true shared gradient."""
    torch.manual_seed(0)
    m = model().eval()
    size = (32, 64) if isinstance(m, SegNetMTAN) else (32, 40)
    direct, through = _grads_direct_and_through_z(m, _x(size, torch.device("cpu")))
    for a, b in zip(direct, through, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_mtan_shared_attention_convs_are_not_reached_through_z() -> None:
    """With MTAN's shared attention convs (the reference layout) z is NOT an exact representation."""
    torch.manual_seed(0)
    m = SegNetMTAN(TASKS, filters=(8, 16, 16, 32, 32), norm="group")
    assert not m.representation_exact and SegNetMTAN(TASKS, share_attention_convs=False).representation_exact
    att_ids = {id(p) for key in ("enc_att_block", "dec_att_block") for p in m.encoder.get_submodule(key).parameters()}
    direct, through = _grads_direct_and_through_z(m, _x((32, 64), torch.device("cpu")))
    att = [(a, b) for p, a, b in zip(m.shared_parameters(), direct, through, strict=True) if id(p) in att_ids]
    assert att and all(b is None for _, b in att)
    assert sum(float(a.abs().sum()) for a, _ in att if a is not None) > 0


def test_mtan_paper_size_and_divisibility_error() -> None:
    nyu = (TaskSpec("seg", "seg", 13), TaskSpec("depth", "depth", 1), TaskSpec("normal", "normal", 3))
    m = make_model("segnet_mtan", nyu)
    n = sum(p.numel() for p in m.parameters())
    assert 44.0e6 < n < 44.4e6  # SegNet-MTAN at paper size: encoder 44.1 M (incl. attention) + decoders 0.11 M
    with pytest.raises(ValueError, match="divisible by 32"):
        m(torch.zeros(1, 3, 40, 64))


def test_resnet_is_resnet50_with_output_stride_8() -> None:
    m = ResNetASPP(TASKS, width=64)
    assert sum(p.numel() for p in m.shared_parameters()) == 23_508_032  # torchvision resnet50 minus fc
    small = ResNetASPP(TASKS, width=4)
    assert small.features(torch.zeros(2, 3, 32, 40)).shape == (2, 128, 4, 5)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in make_model("small", TASKS).modules())


def test_pretrained_weights_load_from_a_local_file_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = ResNetASPP(TASKS, width=4)
    state = {**src.encoder.state_dict(), "fc.weight": torch.zeros(10, 128), "fc.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "resnet.pth")
    torch.manual_seed(1)
    dst = make_model("resnet50_aspp", TASKS, width=4, pretrained_path=tmp_path / "resnet.pth")
    for k, v in src.encoder.state_dict().items():
        torch.testing.assert_close(dst.encoder.state_dict()[k], v)
    with pytest.raises(ValueError, match="not a file"):
        make_model("resnet50_aspp", TASKS, width=4, pretrained_path=tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not match"):
        make_model("resnet50_aspp", TASKS, width=4, pretrained_path=tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="only supported"):
        make_model("small", TASKS, pretrained_path=tmp_path / "resnet.pth")


def test_pretrained_weights_without_num_batches_tracked_load(tmp_path: Path) -> None:
    """torchvision's v1 ResNet-50 file (LibMTL's resnet50-19c8e357.pth) has no BatchNorm ``num_batches_tracked``:
    those, and only those, may be missing; any other missing or unexpected key is an error that names it."""
    torch.manual_seed(0)
    src = ResNetASPP(TASKS, width=4)
    full = {k: v.clone() for k, v in src.encoder.state_dict().items()}
    counters = [k for k in full if k.endswith("num_batches_tracked")]
    assert len(counters) == 53  # every BatchNorm of ResNet-50
    v1 = {k: v for k, v in full.items() if k not in counters}
    torch.save({**v1, "fc.weight": torch.zeros(10, 128), "fc.bias": torch.zeros(10)}, tmp_path / "v1.pth")
    torch.manual_seed(1)
    dst = make_model("resnet50_aspp", TASKS, width=4, pretrained_path=tmp_path / "v1.pth")
    loaded = dst.encoder.state_dict()
    for k, v in v1.items():
        assert torch.equal(loaded[k], v), k
    assert all(int(loaded[k]) == 0 for k in counters)  # this model's own (fresh) counters

    without_weight = {k: v for k, v in v1.items() if k != "layer2.1.bn2.weight"}
    torch.save(without_weight, tmp_path / "gap.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \['layer2\.1\.bn2\.weight'\]"):
        make_model("resnet50_aspp", TASKS, width=4, pretrained_path=tmp_path / "gap.pth")
    torch.save({**full, "layer5.0.conv1.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"1 unexpected keys \['layer5\.0\.conv1\.weight'\]"):
        make_model("resnet50_aspp", TASKS, width=4, pretrained_path=tmp_path / "extra.pth")


def test_bad_model_arguments_name_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="valid models: " + ", ".join(MODELS)):
        make_model("unet", TASKS)
    with pytest.raises(ValueError, match="unique"):
        make_model("small", (TASKS[0], TASKS[0]))
    with pytest.raises(ValueError, match="at least one task"):
        make_model("small", ())
