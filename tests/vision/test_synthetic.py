"""``synthetic_scenes`` and ``dense_digits``: determinism, label consistency, knobs, non-triviality, speed."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mtrl.vision.data.synthetic import CLASS_NAMES, SyntheticScenes
from mtrl.vision.metrics import SegMetric

SIZE = (32, 40)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_from_seed_split_and_index() -> None:
    ds = SyntheticScenes("train", size=SIZE, length=4, seed=7)
    assert _equal(ds[2], SyntheticScenes("train", size=SIZE, length=4, seed=7)[2])
    assert not torch.equal(ds[2]["image"], ds[3]["image"])
    assert not torch.equal(ds[2]["image"], SyntheticScenes("train", size=SIZE, length=4, seed=8)[2]["image"])
    assert not torch.equal(ds[2]["image"], SyntheticScenes("val", size=SIZE, length=4, seed=7)[2]["image"])


def test_sample_format_and_label_consistency() -> None:
    ds = SyntheticScenes("val", size=SIZE, length=6, hole_rate=0.1, seg_ignore_rate=0.05)
    assert [(t.name, t.kind, t.out_channels) for t in ds.tasks] == [
        ("seg", "seg", len(CLASS_NAMES)),
        ("depth", "depth", 1),
        ("normal", "normal", 3),
    ]
    n_px = SIZE[0] * SIZE[1]
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, *SIZE) and s["image"].dtype == torch.float32
        assert 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
        assert s["seg"].dtype == torch.int64 and -1 <= int(s["seg"].min()) and int(s["seg"].max()) < len(CLASS_NAMES)
        depth, normal = s["depth"][0], s["normal"]
        hole = depth == 0
        assert int(hole.sum()) == round(0.1 * n_px)  # requested hole rate, exactly
        assert int((s["seg"] == -1).sum()) == round(0.05 * n_px)
        assert torch.equal((normal == 0).all(dim=0), hole)  # normals invalid exactly on the depth holes
        assert bool((depth[~hole] > 0).all())
        norms = normal.norm(dim=0)[~hole]
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)


def test_geometry_is_exact() -> None:
    """Normals face the camera, and the floor points d·(u, v, 1) all lie on one plane with the labelled normal."""
    h, w = SIZE
    focal = 0.9 * w
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rays = torch.stack([(cols + 0.5 - w / 2) / focal, -(rows + 0.5 - h / 2) / focal, torch.ones(h, w)])
    ds = SyntheticScenes("train", size=SIZE, length=5)
    for i in range(len(ds)):
        s = ds[i]
        valid = s["depth"][0] > 0
        assert bool(((s["normal"] * rays).sum(0)[valid] < 1e-5).all())  # visible side
        floor = valid & (s["seg"] == CLASS_NAMES.index("floor"))
        points = (rays * s["depth"])[:, floor]  # (3, N) camera-frame points
        offsets = (s["normal"][:, floor] * points).sum(0)  # n·P is constant on a plane
        assert float(offsets.std()) < 1e-3 * float(offsets.abs().mean())


def test_imbalance_and_conflict_knobs() -> None:
    base = SyntheticScenes("train", size=SIZE, length=2, hole_rate=0.05)
    mm = SyntheticScenes("train", size=SIZE, length=2, hole_rate=0.05, depth_scale=1000.0, loss_scales={"seg": 10.0})
    assert torch.allclose(mm[1]["depth"], base[1]["depth"] * 1000)
    assert torch.equal(mm[1]["image"], base[1]["image"])
    assert mm.tasks[0].loss_scale == 10.0 and mm.tasks[1].loss_scale == 1.0
    conflict = SyntheticScenes("train", size=SIZE, length=2, hole_rate=0.05, conflict=0.5)
    assert [t.name for t in conflict.tasks][-1] == "pseudo_depth" and conflict.tasks[-1].kind == "depth"
    s = conflict[1]
    depth, pseudo = s["depth"], s["pseudo_depth"]
    assert torch.equal(depth == 0, pseudo == 0)
    valid = depth > 0
    expected = 1.5 + 0.5 * torch.sin(2 * torch.pi * 0.5 * depth[valid].double())
    assert torch.allclose(pseudo[valid].double(), expected, atol=1e-5)
    order = depth[valid].argsort()
    steps = pseudo[valid][order].diff()
    assert bool((steps > 1e-3).any()) and bool((steps < -1e-3).any())  # non-monotone in the true depth
    single = SyntheticScenes("train", size=SIZE, length=2, hole_rate=0.05, tasks=("depth",))
    assert set(single[1]) == {"image", "depth"} and torch.equal(single[1]["depth"], depth)
    fewer = SyntheticScenes("train", size=SIZE, length=4, num_classes=5)
    assert max(int(fewer[i]["seg"].max()) for i in range(4)) < 5 and fewer.tasks[0].out_channels == 5


def test_invalid_arguments_name_the_choices() -> None:
    with pytest.raises(ValueError, match="valid splits"):
        SyntheticScenes("test")
    with pytest.raises(ValueError, match=r"valid: 4\.\.7"):
        SyntheticScenes(num_classes=9)
    with pytest.raises(ValueError, match="unknown tasks"):
        SyntheticScenes(loss_scales={"edges": 2.0})
    with pytest.raises(ValueError, match="subset"):
        SyntheticScenes(tasks=("seg", "edges"))


def _pixels(ds: SyntheticScenes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel colour features, geometry features (normal, depth, image row) and labels, flattened."""
    samples = [ds[i] for i in range(len(ds))]
    image = torch.stack([s["image"] for s in samples])
    rows = torch.linspace(0, 1, image.shape[2]).view(1, 1, -1, 1).expand(len(samples), 1, -1, image.shape[3])
    geometry = torch.cat(
        [torch.stack([s["normal"] for s in samples]), torch.stack([s["depth"] for s in samples]), rows], 1
    )
    labels = torch.stack([s["seg"] for s in samples]).flatten()

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])

    return flat(image), flat(geometry), labels


def _pixel_classifier_miou(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor
) -> float:
    """Quadratic-feature multinomial logistic regression fitted per pixel (LBFGS); validation mIoU."""
    keep = train_y >= 0
    pick = torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(0))[:20000]
    x, y = train_x[keep][pick], train_y[keep][pick]
    mean, std = x.mean(0), x.std(0) + 1e-6

    def features(z: torch.Tensor) -> torch.Tensor:
        z = (z - mean) / std
        return torch.cat([z, (z[:, :, None] * z[:, None, :]).flatten(1)], 1)

    torch.manual_seed(0)
    model = torch.nn.Linear(features(x[:1]).shape[1], len(CLASS_NAMES))
    opt = torch.optim.LBFGS(model.parameters(), max_iter=60)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(features(x)), y)
        loss.backward()
        return loss

    opt.step(closure)
    metric = SegMetric(len(CLASS_NAMES))
    with torch.no_grad():
        metric.update(model(features(val_x)).argmax(1), val_y)
    return metric.compute()["miou"]


def test_colour_alone_cannot_segment_but_geometry_can() -> None:
    """Non-triviality: a per-pixel RGB classifier stays far below one given the (CNN-inferable) geometry."""
    train_rgb, train_geo, train_y = _pixels(SyntheticScenes("train", length=40))
    val_rgb, val_geo, val_y = _pixels(SyntheticScenes("val", length=20))
    colour = _pixel_classifier_miou(train_rgb, train_y, val_rgb, val_y)
    geometry = _pixel_classifier_miou(train_geo, train_y, val_geo, val_y)
    assert colour < 0.25, colour  # measured 0.13 with 7 classes
    assert geometry > colour + 0.3, (geometry, colour)  # measured 0.62


def test_a_small_cnn_segments_far_better_than_per_pixel_colour() -> None:
    """Non-triviality: the project's small CNN trained on seg alone for a short CPU budget reaches a mIoU far
    above the per-pixel colour classifier fitted on the same scenes (measured 32×40: CNN 0.34/0.35 over seeds
    0/1 after 300 steps, colour 0.12), so segmentation needs spatial context, not hue."""
    from mtrl.vision.losses import multi_task_losses
    from mtrl.vision.models import make_model

    size = (32, 40)
    train = SyntheticScenes("train", size=size, length=128, tasks=("seg",))
    val = SyntheticScenes("val", size=size, length=32, tasks=("seg",))
    train_s, val_s = [train[i] for i in range(len(train))], [val[i] for i in range(len(val))]

    def pixels(samples: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = torch.stack([s["image"] for s in samples]).permute(0, 2, 3, 1).reshape(-1, 3)
        return rgb, torch.stack([s["seg"] for s in samples]).flatten()

    colour = _pixel_classifier_miou(*pixels(train_s[:40]), *pixels(val_s))
    torch.manual_seed(0)
    model = make_model("small", train.tasks, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(len(train_s), (8,), generator=gen).tolist()
        x, y = torch.stack([train_s[i]["image"] for i in idx]), torch.stack([train_s[i]["seg"] for i in idx])
        loss = multi_task_losses(train.tasks, model(x), {"seg": y}).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    metric = SegMetric(len(CLASS_NAMES))
    with torch.no_grad():
        logits = model.eval()(torch.stack([s["image"] for s in val_s]))["seg"]
        metric.update(logits.argmax(1), torch.stack([s["seg"] for s in val_s]))
    cnn = metric.compute()["miou"]
    assert colour < 0.2, colour
    assert cnn > colour + 0.15 and cnn > 2 * colour, (cnn, colour)


def test_task_gradients_conflict_on_the_small_model() -> None:
    """Negative cosines between task gradients on the project's small model, read from the engine's report:
    during the first 40 ew steps (seed 0) the smallest pairwise cosine of the shared-parameter gradients is
    negative on most steps (measured on seeds 0–3: 68–93 % of the steps, minimum −0.33 … −0.48)."""
    from mtrl.balancers import make_balancer
    from mtrl.vision.models import make_model
    from mtrl.vision.step import BalancedStep

    ds = SyntheticScenes("train", size=(32, 40), length=96, seed=0)
    samples = [ds[i] for i in range(len(ds))]
    torch.manual_seed(0)
    model = make_model("small", ds.tasks, width=8)
    step = BalancedStep(
        model, ds.tasks, make_balancer("ew", 3), torch.optim.Adam(model.parameters(), lr=3e-3), diagnostics=True
    )
    cos_min = []
    for i in range(40):
        chunk = samples[8 * (i % 12) : 8 * (i % 12) + 8]
        x = torch.stack([s["image"] for s in chunk])
        _, report = step(x, {t.name: torch.stack([s[t.name] for s in chunk]) for t in ds.tasks})
        assert report.cos_min is not None and report.cos_mean is not None and report.cos_min <= report.cos_mean
        cos_min.append(report.cos_min)
    assert min(cos_min) < -0.2, cos_min
    assert np.mean(np.asarray(cos_min) < 0) > 0.5, cos_min


def test_dense_digits_shapes_determinism_and_layers() -> None:
    pytest.importorskip("sklearn")
    from mtrl.vision.data.dense_digits import BACKGROUND_DEPTH, DenseDigits

    ds = DenseDigits("train", length=6, seed=1)
    assert [(t.name, t.out_channels) for t in ds.tasks] == [("seg", 11), ("depth", 1)]
    s = ds[3]
    assert s["image"].shape == (3, 48, 48) and s["seg"].shape == (48, 48) and s["depth"].shape == (1, 48, 48)
    assert s["seg"].dtype == torch.int64 and s["depth"].dtype == torch.float32
    assert _equal(s, DenseDigits("train", length=6, seed=1)[3])
    assert not torch.equal(s["image"], ds[4]["image"])
    for i in range(len(ds)):
        seg, depth = ds[i]["seg"], ds[i]["depth"][0]
        assert 0 <= int(seg.min()) and int(seg.max()) <= 10 and bool((seg > 0).any())
        assert torch.equal(seg == 0, depth == BACKGROUND_DEPTH)  # background is the farthest layer
        assert bool((depth[seg > 0] < BACKGROUND_DEPTH).all()) and bool((depth > 0).all())
    val = DenseDigits("val", length=2, seed=1)
    assert len(set(val._labels.tolist())) == 10 and len(val._labels) + len(ds._labels) == 1797


def test_dense_digits_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtrl.vision.data import dense_digits

    dense_digits.load_glyphs.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"mtrl\[digits\]"):
        dense_digits.DenseDigits("train", length=1)
    monkeypatch.undo()
    dense_digits.load_glyphs.cache_clear()


def test_dense_digits_occlusion_labels() -> None:
    """Each stroke pixel shows the nearest (smallest-depth) glyph covering it: its class and its depth."""
    pytest.importorskip("sklearn")
    from mtrl.vision.data.dense_digits import BACKGROUND_DEPTH, DenseDigits

    ds = DenseDigits("val", length=10, seed=0, size=(32, 32))
    overlaps = 0
    for i in range(len(ds)):
        sample, placements = ds[i], ds.placements(i)
        best_depth = np.full((32, 32), BACKGROUND_DEPTH, np.float32)
        best_seg = np.zeros((32, 32), np.int64)
        covered = np.zeros((32, 32), np.int64)
        for p in placements:
            mask = np.zeros((32, 32), bool)
            mask[p.top : p.top + p.side, p.left : p.left + p.side] = ds.glyph_mask(p)
            nearer = mask & (p.depth < best_depth)
            best_depth[nearer], best_seg[nearer] = p.depth, 1 + p.digit
            covered += mask
        overlaps += int((covered > 1).sum())
        np.testing.assert_array_equal(sample["seg"].numpy(), best_seg)
        np.testing.assert_array_equal(sample["depth"][0].numpy(), best_depth)
    assert overlaps > 0  # the check above did exercise occlusions


@pytest.mark.slow
def test_task_gradients_conflict_on_a_small_cnn() -> None:
    """After 40 EW steps of a tiny shared conv encoder, per-task encoder gradients include negative cosines.

    Measured (2 threads): mean cos(seg, normal) ≈ −0.22, min over pairs and batches ≈ −0.57.
    """
    from mtrl.vision.losses import multi_task_losses

    ds = SyntheticScenes("train", size=(32, 40), length=96)
    samples = [ds[i] for i in range(96)]

    def batch(i: int) -> dict[str, torch.Tensor]:
        return {k: torch.stack([s[k] for s in samples[8 * i : 8 * i + 8]]) for k in samples[0]}

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=2, dilation=2)
    )
    heads = torch.nn.ModuleDict({t.name: torch.nn.Conv2d(16, t.out_channels, 1) for t in ds.tasks})
    opt = torch.optim.Adam([*encoder.parameters(), *heads.parameters()], lr=3e-3)

    def losses(b: dict[str, torch.Tensor]) -> torch.Tensor:
        z = torch.relu(encoder(b["image"]))
        return multi_task_losses(ds.tasks, {k: h(z) for k, h in heads.items()}, b)

    for step in range(40):
        opt.zero_grad()
        losses(batch(step % 8)).sum().backward()
        opt.step()
    cosines = []
    for i in range(8, 12):
        task_losses = losses(batch(i))
        grads = [torch.autograd.grad(loss, list(encoder.parameters()), retain_graph=True) for loss in task_losses]
        jac_TP = torch.nn.functional.normalize(
            torch.stack([torch.cat([g.flatten() for g in gs]) for gs in grads]), dim=1
        )
        cosines.append(jac_TP @ jac_TP.T)
    cos = torch.stack(cosines)
    assert float(cos.min()) < -0.1
    assert float(cos[:, 0, 2].mean()) < 0  # seg vs normal
