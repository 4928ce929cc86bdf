"""Whole scans into `generate`: one box per lesion at the model's spacing, written back inside the
lesion only; oblique and anisotropic grids, lesions at the edge, overlapping boxes, lesions too big."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lefusion
from lefusion.checkpoints import save_model
from lefusion.cli import main
from lefusion.config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig
from lefusion.data.conventions import DataConventions
from lefusion.data.grid import index_to_world, world_to_index
from lefusion.data.regions import cut_region, find_lesions, paste_region, region_box
from lefusion.diffusion.model import DiffusionModel
from lefusion.diffusion.sampling import Ancestral
from lefusion.errors import LeFusionError
from lefusion.generation import GenerateConfig, generate_dataset
from lefusion.generation.baseline_methods import make_baseline
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.models import Denoiser

pytestmark = pytest.mark.usefixtures("one_thread")
ROI = (8, 16, 16)
MODEL_SPACING = (2.0, 1.5, 1.5)
# an oblique grid: rotated 20 degrees about z, x flipped; anisotropic 2.5 x 0.9 x 0.8 mm
C, S = np.cos(np.radians(20)), np.sin(np.radians(20))
OBLIQUE = Geometry(spacing=(2.5, 0.9, 0.8), origin=(-120.0, 35.5, 410.0), direction=(-C, -S, 0.0, -S, C, 0.0, 0.0, 0.0, 1.0))


def _ball(shape, centre, radius_vox) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return (((grid - np.asarray(centre)) / np.asarray(radius_vox)) ** 2).sum(-1) <= 1


def _scan(rng, shape=(24, 90, 80)) -> np.ndarray:
    return rng.integers(-1000, 300, shape).astype(np.int16)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> lefusion.LeFusionModel:
    config = ModelConfig(
        denoiser=DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8),
        schedule=ScheduleConfig(timesteps=3),
        preprocess=PreprocessConfig(roi_shape=ROI, spacing=MODEL_SPACING),
        hist_presets=(tuple([1 / 16] * 16),),
    )
    torch.manual_seed(0)
    return lefusion.load(save_model(DiffusionModel(config, Denoiser(config.denoiser)), tmp_path_factory.mktemp("m") / "model"))


def _dataset(root: Path, scans: dict[str, tuple[np.ndarray, np.ndarray, Geometry]]) -> Path:
    for name, (image, mask, geometry) in scans.items():
        write_volume(Volume(image, geometry), root / "images" / f"{name}.nii.gz")
        write_volume(Volume(mask.astype(np.uint8), geometry), root / "masks" / f"{name}.nii.gz")
    return root


def test_grid_round_trip_on_an_oblique_grid():
    index = np.array([[0.0, 0.0, 0.0], [3.5, 10.0, -2.0], [23.0, 89.0, 79.0]])
    assert np.allclose(world_to_index(OBLIQUE, index_to_world(OBLIQUE, index)), index)
    # one step along x moves by 0.8 mm along the direction's first column
    step = index_to_world(OBLIQUE, np.array([0.0, 0.0, 1.0])) - index_to_world(OBLIQUE, np.zeros(3))
    assert np.allclose(step, 0.8 * np.array([-C, -S, 0.0]))


def test_cut_and_paste_on_the_scan_grid_copy_voxels_exactly():
    """A box with the scan's spacing is made of scan voxels: pasting the cut ROI back changes nothing,
    and near the edge the box is padded, the lesion not shifted."""
    rng = np.random.default_rng(0)
    image = Volume(_scan(rng), OBLIQUE)
    mask = _ball(image.shape, (2, 45, 40), (1.5, 5, 5)).astype(np.uint8)  # touches the first slice
    preprocess = PreprocessConfig(roi_shape=ROI)  # no spacing: the scan's own grid
    (lesion,) = find_lesions(mask, (1,))
    region = cut_region(image, mask, lesion, preprocess)
    assert region.box.offset is not None and region.box.offset[0] < 0, "the box reaches past the first slice"
    roi = region.roi
    assert (roi.image[0][: -region.box.offset[0]] == -1).all(), "outside the scan is padding (air)"
    assert int((roi.label > 0).sum()) == int(mask.sum()), "the whole lesion is in the box"
    target = image.array.copy()
    paste_region(target, image.geometry, region, roi.image)
    assert np.array_equal(target, image.array)


def test_resampled_box_keeps_the_lesion_volume_and_writes_only_lesion_voxels():
    rng = np.random.default_rng(1)
    image = Volume(_scan(rng), OBLIQUE)
    mask = _ball(image.shape, (12, 40, 44), (2.5, 8, 9)).astype(np.uint8)
    (lesion,) = find_lesions(mask, (1,))
    region = cut_region(image, mask, lesion, PreprocessConfig(roi_shape=ROI, spacing=MODEL_SPACING))
    assert region.box.offset is None
    voxel_ratio = np.prod(OBLIQUE.spacing) / np.prod(MODEL_SPACING)
    assert int((region.roi.label > 0).sum()) == round(mask.sum() * voxel_ratio), "volume-preserving mask resampling"
    target = image.array.copy()
    paste_region(target, image.geometry, region, torch.full((1, *ROI), 0.25))  # 0.25 -> -125 HU
    assert np.array_equal(target[mask == 0], image.array[mask == 0])
    assert np.all(np.abs(target[mask == 1].astype(int) - (-125)) <= 1)


def test_whole_oblique_scans_keep_every_background_voxel(model, tmp_path):
    rng = np.random.default_rng(2)
    edge = _ball((24, 90, 80), (12, 3, 40), (2, 5, 5)) | _ball((24, 90, 80), (10, 60, 20), (1.5, 4, 4))
    data = _dataset(
        tmp_path / "data",
        {
            "oblique": (_scan(rng), edge, OBLIQUE),
            "plain": (_scan(rng), _ball((24, 90, 80), (12, 45, 40), (2, 6, 6)), Geometry(spacing=(2.0, 1.5, 1.5))),
        },
    )
    manifest = json.loads(
        generate_dataset(
            model, data, tmp_path / "out", GenerateConfig(presets=("1",), sampler=Ancestral(), batch_size=3), progress=False
        ).read_text()
    )
    assert len(manifest["outputs"]) == 2
    for entry in manifest["outputs"].values():
        source, mask = read_volume(entry["source_image"]), read_volume(entry["source_mask"]).array
        generated = read_volume(tmp_path / "out" / entry["image"])
        assert generated.array.dtype == np.int16 and generated.geometry.matches(source.geometry)
        assert np.array_equal(generated.array[mask == 0], source.array[mask == 0]), "background must stay bit-exact"
        assert not np.array_equal(generated.array[mask > 0], source.array[mask > 0])
        assert np.array_equal(read_volume(tmp_path / "out" / entry["label"]).array, mask)
        lesions = entry["lesions"]
        assert [item["lesion"] for item in lesions] == list(range(1, len(lesions) + 1)) and sum(item["voxels"] for item in lesions) == int(
            (mask > 0).sum()
        )
        assert entry["network_evaluations"] == 3 * len(lesions)
    oblique = manifest["outputs"]["oblique_preset1"]["lesions"]
    assert len(oblique) == 2 and oblique[0]["box"]["aligned_offset_zyx"] is None, "resampled to the model's spacing"
    plain = manifest["outputs"]["plain_preset1"]["lesions"]
    assert plain[0]["box"]["aligned_offset_zyx"] is not None, "at the model's own spacing the box is made of scan voxels"


def test_overlapping_boxes_are_generated_one_after_another(tmp_path):
    """The second lesion's box holds the first lesion: it is cut after the first is pasted."""
    rng = np.random.default_rng(3)
    shape = (40, 90, 90)  # bigger than the layout's default 32 x 64 x 64 box: a whole scan
    mask = _ball(shape, (20, 40, 40), (2, 4, 4)).astype(np.uint8) + _ball(shape, (20, 50, 52), (2, 4, 4)).astype(np.uint8)
    data = _dataset(tmp_path / "data", {"two": (_scan(rng, shape), mask, Geometry())})
    baseline = make_baseline("handcrafted", data, texture=[(200.0, 10.0)])
    boxes = [region_box(Geometry(), les, baseline.conventions.preprocess) for les in find_lesions(mask, (1,))]
    assert len(boxes) == 2
    seen = []
    original_call = type(baseline).__call__

    def spy(self, jobs, rois, tick):
        seen.extend(r.image.clone() for r in rois)
        return original_call(self, jobs, rois, tick)

    type(baseline).__call__ = spy
    try:
        manifest = json.loads(
            generate_dataset(baseline, data, tmp_path / "out", GenerateConfig(presets=("mix",), batch_size=4), progress=False).read_text()
        )
    finally:
        type(baseline).__call__ = original_call
    (entry,) = manifest["outputs"].values()
    assert [lesion["round"] for lesion in entry["lesions"]] == [0, 1]
    assert len(seen) == 2
    # in lesion 2's box, lesion 1's voxels already carry the generated texture (about +200 HU -> 0.71)
    first = find_lesions(mask, (1,))[0]
    inside = first.voxels - np.asarray(boxes[1].offset)
    inside = inside[np.all((inside >= 0) & (inside < np.asarray(boxes[1].shape)), axis=1)]
    assert len(inside) > 10
    assert seen[1][0][tuple(inside.T)].mean() > 0.5 > seen[0][0][tuple(inside.T)].mean()


def test_a_lesion_bigger_than_the_box_is_refused_before_anything_is_written(model, tmp_path, capsys):
    rng = np.random.default_rng(4)
    shape = (30, 80, 80)
    big = _ball(shape, (15, 40, 40), (4, 20, 20))  # 40 voxels across at 1.5 mm: the box holds 16
    data = _dataset(
        tmp_path / "data",
        {
            "a_ok": (_scan(rng, shape), _ball(shape, (15, 40, 40), (2, 3, 3)), Geometry(spacing=(2.0, 1.5, 1.5))),
            "b_big": (_scan(rng, shape), big, Geometry(spacing=(2.0, 1.5, 1.5))),
        },
    )
    checkpoint = tmp_path / "model"
    model.save(checkpoint)
    code = main(
        ["generate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "out"), "--sampler", "ancestral"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "b_big.nii.gz" in err and "does not fit the model's box" in err
    assert not (tmp_path / "out").exists()


def test_python_api_on_a_whole_scan_matches_generate(model, tmp_path):
    rng = np.random.default_rng(5)
    data = _dataset(tmp_path / "data", {"scan": (_scan(rng), _ball((24, 90, 80), (12, 45, 40), (2, 6, 6)), OBLIQUE)})
    manifest = json.loads(
        generate_dataset(
            model, data, tmp_path / "out", GenerateConfig(presets=("1",), seed=3, sampler=Ancestral()), progress=False
        ).read_text()
    )
    (entry,) = manifest["outputs"].values()
    api = model.inpaint(entry["source_image"], entry["source_mask"], preset=1, seed=3, sampler=Ancestral())
    assert np.array_equal(api, read_volume(tmp_path / "out" / entry["image"]).array)


def test_mri_boxes_are_scaled_from_their_own_voxels():
    """A bright structure far from the lesion must not change the lesion box's intensity mapping."""
    rng = np.random.default_rng(6)
    array = rng.uniform(100, 200, (12, 80, 80)).astype(np.float32)
    mask = _ball(array.shape, (6, 20, 20), (1.5, 3, 3)).astype(np.uint8)
    (lesion,) = find_lesions(mask, (1,))
    preprocess = PreprocessConfig(modality="mri", roi_shape=(6, 16, 16))
    before = cut_region(Volume(array), mask, lesion, preprocess).roi.mapping
    array[:, 70:, 70:] = 5000.0  # outside the lesion's box
    after = cut_region(Volume(array), mask, lesion, preprocess).roi.mapping
    assert (before.lo, before.hi) == (after.lo, after.hi) and after.hi < 201


def test_two_classes_of_one_lesion_are_cut_together():
    label = np.zeros((10, 40, 40), np.uint8)
    label[_ball(label.shape, (5, 20, 20), (2, 6, 6))] = 3
    label[_ball(label.shape, (5, 20, 20), (1, 2, 2))] = 4  # PMO core inside the MI
    lesions = find_lesions(label, (3, 4))
    assert len(lesions) == 1 and lesions[0].labels == (3, 4)
    image = Volume(np.random.default_rng(7).uniform(0, 100, label.shape).astype(np.float32))
    region = cut_region(image, label, lesions[0], PreprocessConfig(modality="mri", roi_shape=(8, 16, 16)))
    assert set(np.unique(region.roi.label.numpy())) == {0, 3, 4}


def test_a_constant_mri_box_is_refused_naming_the_file(tmp_path):
    label = np.zeros((8, 40, 40), np.uint8)
    label[4, 10, 10] = 1
    image = np.ones(label.shape, np.float32)
    image[:, 30:, 30:] = 2.0  # the scan has a range, the lesion's box does not
    data = _dataset(tmp_path / "data", {"flat": (image, label, Geometry())})
    mri = DataConventions((1,), None, PreprocessConfig(modality="mri", roi_shape=ROI))
    baseline = dataclasses.replace(make_baseline("handcrafted", data, texture=[(1.0, 0.1)]), conventions=mri)
    with pytest.raises(LeFusionError, match=r"flat.nii.gz.*constant intensity"):
        generate_dataset(baseline, data, tmp_path / "out", GenerateConfig(), progress=False)
    assert not (tmp_path / "out").exists()
