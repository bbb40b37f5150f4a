"""NYUv2/Cityscapes loaders on small files written in the MTAN/LibMTL layout, augmentation, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtrl.config import ConfigError
from mtrl.vision.data import Cityscapes, NYUv2, SyntheticScenes, augment_sample, hflip, make_dataset, scale_crop
from mtrl.vision.data.nyuv2 import NYUV2_TASKS

H, W = 12, 16


def _write_layout(
    root: Path, split: str, n: int, *, normals: bool = True, classes: int = 13, seed: int = 0, labels: str = "label"
) -> None:
    """Write ``n`` samples with labels in [-1, classes), depth holes (0) and normal holes (all-zero)."""
    rng = np.random.default_rng(seed)
    folders = ["image", labels, "depth"] + (["normal"] if normals else [])
    for folder in folders:
        (root / split / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(root / split / "image" / f"{i}.npy", rng.random((H, W, 3)).astype(np.float32))
        np.save(root / split / labels / f"{i}.npy", rng.integers(-1, classes, (H, W)).astype(np.float32))
        depth = rng.uniform(0.5, 10, (H, W, 1)).astype(np.float32)
        depth[rng.random((H, W)) < 0.2] = 0
        np.save(root / split / "depth" / f"{i}.npy", depth)
        if normals:
            normal = rng.normal(size=(H, W, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=2, keepdims=True)
            normal[rng.random((H, W)) < 0.2] = 0
            np.save(root / split / "normal" / f"{i}.npy", normal)


def test_nyuv2_sample_matches_files(tmp_path: Path) -> None:
    _write_layout(tmp_path, "train", 3)
    ds = NYUv2(tmp_path, "train")
    assert len(ds) == 3 and ds.tasks == NYUV2_TASKS
    sample = ds[1]
    assert set(sample) == {"image", "seg", "depth", "normal"}
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.float32
    assert sample["seg"].shape == (H, W) and sample["seg"].dtype == torch.int64
    assert sample["depth"].shape == (1, H, W) and sample["depth"].dtype == torch.float32
    assert sample["normal"].shape == (3, H, W) and sample["normal"].dtype == torch.float32
    image = np.load(tmp_path / "train" / "image" / "1.npy")
    label = np.load(tmp_path / "train" / "label" / "1.npy")
    normal = np.load(tmp_path / "train" / "normal" / "1.npy")
    np.testing.assert_array_equal(sample["image"].numpy(), image.transpose(2, 0, 1))
    np.testing.assert_array_equal(sample["seg"].numpy(), label.astype(np.int64))
    np.testing.assert_array_equal(sample["normal"].numpy(), normal.transpose(2, 0, 1))
    assert (sample["seg"] == -1).any() and int(sample["seg"].max()) < 13
    assert (sample["depth"] == 0).any()
    assert ((sample["normal"] == 0).all(dim=0)).any()


def test_cityscapes_has_no_normals(tmp_path: Path) -> None:
    _write_layout(tmp_path, "val", 2, normals=False, classes=7)
    ds = Cityscapes(tmp_path, "val")
    assert [t.name for t in ds.tasks] == ["seg", "depth"] and ds.tasks[0].out_channels == 7
    assert set(ds[0]) == {"image", "seg", "depth"}


def test_cityscapes_reads_the_mtan_line_label_7_folder(tmp_path: Path) -> None:
    """MTAN/Nash-MTL/FAMO's Cityscapes copy keeps the 7-class labels in label_7/ (LibMTL's in label/)."""
    _write_layout(tmp_path, "train", 2, normals=False, classes=7, labels="label_7")
    ds = Cityscapes(tmp_path, "train")
    label = np.load(tmp_path / "train" / "label_7" / "1.npy")
    np.testing.assert_array_equal(ds[1]["seg"].numpy(), label.astype(np.int64))
    _write_layout(tmp_path, "val", 2, normals=False, classes=7, labels="label")  # label/ wins when both exist
    (tmp_path / "val" / "label_7").mkdir()
    np.testing.assert_array_equal(
        Cityscapes(tmp_path, "val")[0]["seg"].numpy(), np.load(tmp_path / "val" / "label" / "0.npy").astype(np.int64)
    )
    empty = tmp_path / "empty"
    _write_layout(empty, "train", 1, normals=False, classes=7)
    for f in (empty / "train" / "label").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"train/label/ or .*train/label_7/"):
        Cityscapes(empty, "train")
    _write_layout(tmp_path / "nyu", "train", 1, labels="label_7")
    with pytest.raises(FileNotFoundError, match=r"train/label/0\.npy"):  # NYUv2 has only label/
        NYUv2(tmp_path / "nyu", "train")


def test_labels_outside_the_classes_are_reported_when_read(tmp_path: Path) -> None:
    """-1 is the ignore label; a 255-for-ignore file (another convention) or a class id >= C names the file:
    when the data set is built (every sample is checked), and again when a sample is read (a file changed
    since)."""
    _write_layout(tmp_path, "train", 3, classes=13)
    ds = NYUv2(tmp_path, "train")
    assert int(ds[1]["seg"].min()) == -1  # ignore pixels are fine
    label = np.load(tmp_path / "train" / "label" / "2.npy")
    for bad, message in ((255, r"labels \[255\] outside \[-1, 12\].*map it to -1"), (13, r"labels \[13\] outside"),
                         (-2, r"labels \[-2\]")):  # fmt: skip
        label[0, 0] = bad
        np.save(tmp_path / "train" / "label" / "2.npy", label)
        with pytest.raises(ConfigError, match=r"label/2\.npy holds " + message):
            ds[2]
        with pytest.raises(ConfigError, match=r"label/2\.npy holds " + message):
            NYUv2(tmp_path, "train")


def test_missing_root_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected .*train/image/0\.npy .*preprocessed layout.*got"):
        NYUv2(tmp_path / "nowhere", "train")


def test_malformed_roots_are_rejected(tmp_path: Path) -> None:
    _write_layout(tmp_path, "train", 3)
    (tmp_path / "train" / "depth" / "1.npy").unlink()  # gap in the indices
    with pytest.raises(FileNotFoundError, match=r"depth/0\.npy"):
        NYUv2(tmp_path, "train")
    _write_layout(tmp_path, "train", 3)
    np.save(tmp_path / "train" / "normal" / "3.npy", np.zeros((H, W, 3), np.float32))  # one extra normal
    with pytest.raises(ValueError, match="different numbers of samples"):
        NYUv2(tmp_path, "train")
    (tmp_path / "train" / "normal" / "3.npy").unlink()
    np.save(tmp_path / "train" / "label" / "0.npy", np.zeros((H + 1, W), np.float32))
    with pytest.raises(ValueError, match=r"label/0\.npy of shape"):
        NYUv2(tmp_path, "train")
    with pytest.raises(ValueError, match="valid splits"):
        NYUv2(tmp_path, "test")


def _coded_sample(scale_max: float = 1.5) -> dict[str, torch.Tensor]:
    """Every map encodes the pixel id ``k``: depth = 1 + k, seg = k mod 7, normal = unit vector of k."""
    k = torch.arange(H * W, dtype=torch.float32).reshape(H, W)
    angle = k * 0.1
    normal = torch.stack([torch.cos(angle) * 0.6, torch.sin(angle) * 0.6, torch.full_like(k, -0.8)])
    return {"image": torch.stack([k, k, k]), "seg": (k % 7).long(), "depth": (1 + k)[None], "normal": normal}


def test_hflip_negates_normal_x_and_moves_all_maps() -> None:
    sample = _coded_sample()
    out = hflip(sample, NYUV2_TASKS)
    assert torch.equal(out["seg"], sample["seg"].flip(-1))
    assert torch.equal(out["depth"], sample["depth"].flip(-1))
    assert torch.equal(out["normal"][0], -sample["normal"][0].flip(-1))
    assert torch.equal(out["normal"][1:], sample["normal"][1:].flip(-1))
    assert torch.equal(sample["normal"][0], _coded_sample()["normal"][0])  # input untouched


def test_scale_crop_divides_depth_and_keeps_holes() -> None:
    sample = _coded_sample()
    sample["depth"][:, :, :4] = 0  # invalid columns at the left
    out = scale_crop(sample, NYUV2_TASKS, 1.5, top=0, left=0)
    valid = out["depth"] != 0
    ids = out["depth"][valid] * 1.5 - 1  # the pixel ids the crop copied
    assert torch.allclose(ids, ids.round(), atol=1e-4)
    assert int(ids.round().max()) < int(H / 1.5) * W  # only rows of the crop window
    # nearest resize of the 10 cropped columns to 16: output columns 0..6 come from input columns 0..3 (holes)
    assert bool((out["depth"][..., :7] == 0).all()) and bool((out["depth"][..., 7:] != 0).all())
    assert torch.equal(out["seg"][valid[0]], (ids.round() % 7).long())  # seg moved with depth
    with pytest.raises(ValueError, match="does not fit"):
        scale_crop(sample, NYUV2_TASKS, 1.5, top=H, left=0)


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_is_consistent_across_task_maps(seed: int) -> None:
    sample = _coded_sample()
    out = augment_sample(sample, NYUV2_TASKS, torch.Generator().manual_seed(seed))
    depth = out["depth"][0]
    scales = [s for s in (1.0, 1.2, 1.5) if torch.allclose(depth * s - 1, (depth * s - 1).round(), atol=1e-3)]
    assert scales, "depth must be an original depth divided by one of the scales"
    ids = (depth * scales[0] - 1).round()
    assert torch.equal(out["seg"], (ids % 7).long())
    normal_y = torch.sin(ids * 0.1) * 0.6
    normal_x = torch.cos(ids * 0.1) * 0.6
    assert torch.allclose(out["normal"][1], normal_y, atol=1e-5)
    flipped = not torch.allclose(out["normal"][0], normal_x, atol=1e-5)
    if flipped:
        assert torch.allclose(out["normal"][0], -normal_x, atol=1e-5)
    cols = ids % W  # a flip reverses the column order of the copied ids
    order = cols[:, 1:] - cols[:, :-1]
    assert bool((order <= 0).all()) if flipped else bool((order >= 0).all())


def test_dataset_augmentation_is_seeded_by_epoch_and_index(tmp_path: Path) -> None:
    _write_layout(tmp_path, "train", 4)
    ds = NYUv2(tmp_path, "train", augment=True, seed=3)
    again = NYUv2(tmp_path, "train", augment=True, seed=3)
    for i in range(4):
        assert all(torch.equal(ds[i][k], again[i][k]) for k in ds[i])
    first = [ds[i]["depth"] for i in range(4)]
    ds.set_epoch(1)
    assert any(not torch.equal(first[i], ds[i]["depth"]) for i in range(4))
    plain = NYUv2(tmp_path, "train")
    assert any(not torch.equal(plain[i]["depth"], first[i]) for i in range(4))  # augmentation does something


def test_make_dataset_registry(tmp_path: Path) -> None:
    _write_layout(tmp_path, "val", 2)
    nyu = make_dataset("nyuv2", tmp_path, "val")
    assert isinstance(nyu, NYUv2) and len(nyu) == 2
    syn = make_dataset("synthetic_scenes", None, "val", length=3, size=(16, 20))
    assert isinstance(syn, SyntheticScenes) and len(syn) == 3 and syn[0]["image"].shape == (3, 16, 20)
    with pytest.raises(ValueError, match=r"valid: .*nyuv2"):
        make_dataset("nyu", tmp_path)
    with pytest.raises(ValueError, match="needs root"):
        make_dataset("cityscapes")
