"""LeFusion on brain MRI: FLAIR brain-percentile normalisation, placement in white matter, training on
the lesion ROIs of whole brains, and the bundled demo_brain model inserting lesions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lefusion.cli import main
from lefusion.config import BRAIN_PREPROCESS, ModelConfig, PreprocessConfig
from lefusion.data.conventions import conventions_for
from lefusion.data.regions import cut_region, find_lesions, scan_mapping
from lefusion.data.roi import brain_percentile_mapping, brain_region
from lefusion.errors import LeFusionError
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.training.run import training_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
ASSET = Path(__file__).resolve().parents[1] / "src" / "lefusion" / "assets" / "demo_brain"


def test_brain_percentiles_from_the_brain_and_inverse():
    rng = np.random.default_rng(0)
    array = np.zeros((10, 20, 20), np.float32)
    array[2:8, 4:16, 4:16] = rng.uniform(100.0, 200.0, (6, 12, 12))
    config = PreprocessConfig(modality="mri", mri_intensity="brain-percentiles", percentiles=(1.0, 99.0), headroom=0.5)
    mapping = brain_percentile_mapping(array, config)
    inside = array[array > 0]
    p1, p99 = np.percentile(inside, (1.0, 99.0))
    assert mapping.lo == pytest.approx(p1) and mapping.hi == pytest.approx(p99 + 0.5 * (p99 - p1))
    assert mapping.forward(np.array([p1]))[0] == pytest.approx(-1.0)
    assert mapping.forward(np.array([p99]))[0] < 1.0, "headroom: the brain's top percentile is not clipped"
    values = inside[(inside >= p1) & (inside <= p99)][:50].astype(np.float64)
    assert np.allclose(mapping.inverse(mapping.forward(values)), values)
    # an explicit brain mask wins over the non-zero rule
    only = np.zeros(array.shape, bool)
    only[2:8, 4:10, 4:16] = True
    assert brain_percentile_mapping(array, config, only).lo == pytest.approx(np.percentile(array[only], 1.0))
    # no zero background (skull, noise): Otsu separates the head from the air
    noisy = array + rng.uniform(1.0, 5.0, array.shape).astype(np.float32)
    assert np.array_equal(brain_region(noisy), array > 0)
    with pytest.raises(LeFusionError, match="scan.nii.gz: no brain voxels"):
        brain_percentile_mapping(np.zeros((4, 4, 4), np.float32), config, where="scan.nii.gz")


def test_preprocess_option_is_checked_and_recorded():
    with pytest.raises(ValueError, match="is for MRI"):
        PreprocessConfig(modality="ct", mri_intensity="brain-percentiles")
    with pytest.raises(ValueError, match="percentiles"):
        PreprocessConfig(modality="mri", mri_intensity="brain-percentiles", percentiles=(99.0, 1.0))
    config = ModelConfig(preprocess=BRAIN_PREPROCESS)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.preprocess == BRAIN_PREPROCESS and again.preprocess.mri_intensity == "brain-percentiles"
    old = config.to_dict()
    for key in ("mri_intensity", "percentiles", "headroom"):
        del old["preprocess"][key]
    assert ModelConfig.from_dict(old).preprocess.mri_intensity == "roi-minmax", "older checkpoints keep per-ROI min-max"


def test_every_lesion_of_a_scan_gets_the_scans_mapping(brain_phantom_2mm):
    image = read_volume(brain_phantom_2mm / "images" / "BRAIN-P001.nii.gz")
    label = read_volume(brain_phantom_2mm / "masks" / "BRAIN-P001.nii.gz").array
    lesions = find_lesions(label, (1,))
    assert len(lesions) >= 2
    brain = dataclasses.replace(BRAIN_PREPROCESS, spacing=None)
    mapping = scan_mapping(image, brain)
    cuts = [cut_region(image, label, lesion, brain) for lesion in lesions[:3]]
    assert all(c.roi.mapping == mapping for c in cuts)
    organs = read_volume(brain_phantom_2mm / "organs" / "BRAIN-P001.nii.gz").array
    assert scan_mapping(image, brain, organs > 0) == mapping, "skull-stripped: non-zero voxels = the brain mask"
    minmax = dataclasses.replace(brain, mri_intensity="roi-minmax")
    assert len({cut_region(image, label, lesion, minmax).roi.mapping for lesion in lesions[:3]}) > 1
    assert scan_mapping(image, minmax) is None


def test_place_several_lesions_inside_white_matter(brain_phantom_2mm, tmp_path, capsys):
    out = tmp_path / "placed"
    args = ["place", "--scans", str(brain_phantom_2mm), "--organ-masks", str(brain_phantom_2mm / "organs"), "--organ-labels", "3"]
    args += ["--lesions", "3:12", "--diameter", "3:15", "--shapes", "handcrafted", "--seed", "0", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    record = json.loads((out / "lesions.json").read_text())
    assert not record["failed"] and len(record["scans"]) == 5
    for name, entry in record["scans"].items():
        organs = read_volume(brain_phantom_2mm / "organs" / f"{name}.nii.gz").array
        before = read_volume(brain_phantom_2mm / "masks" / f"{name}.nii.gz").array > 0
        after = read_volume(out / "masks" / f"{name}.nii.gz").array > 0
        new = after  # place writes the new lesions' masks; the phantom's own ones are kept clear of
        assert 3 <= len(entry["lesions"]) <= 12
        assert ndimage.label(new, structure=np.ones((3, 3, 3)))[1] == len(entry["lesions"])
        assert np.all(organs[new] == 3), f"{name}: a placed lesion leaves the white matter"
        assert not (ndimage.binary_dilation(before) & new).any(), "new lesions keep clear of the phantom's own"


def test_training_set_is_the_lesion_rois_of_the_whole_brains(brain_phantom_2mm):
    conventions = conventions_for(brain_phantom_2mm)
    assert conventions.preprocess == BRAIN_PREPROCESS
    dataset = training_dataset(brain_phantom_2mm, conventions)
    meta = {c["name"]: c for c in json.loads((brain_phantom_2mm / "phantom.json").read_text())["cases"]}
    train = [n for n, c in meta.items() if c["split"] == "pathological" and not c["test"]]
    assert len(dataset) == sum(meta[n]["n_lesions"] for n in train) - dataset.skipped >= 4
    assert {name.split("#")[0] for name in dataset.names} == set(train)
    assert dataset.common_spacing == (2.0, 2.0, 2.0)
    item = dataset[0]
    assert item["x"].shape == (1, 16, 32, 32) and float(item["x"].min()) >= -1 and float(item["x"].max()) <= 1
    lesion = item["masks"][0] > 0
    assert lesion.any() and float(item["x"][0][lesion].mean()) > float(item["x"][0][~lesion & (item["x"][0] > -0.9)].mean())


@pytest.mark.skipif(not (ASSET / "model.safetensors").is_file(), reason="demo_brain not bundled")
def test_bundled_demo_brain_inserts_lesions_keeping_the_background(brain_phantom_2mm, tmp_path, capsys):
    config = json.loads((ASSET / "config.json").read_text())
    assert config["preprocess"]["mri_intensity"] == "brain-percentiles" and (ASSET / "model.safetensors").stat().st_size <= 5e6
    scans = tmp_path / "scans"
    for sub in ("images", "masks", "organs"):
        source = read_volume(brain_phantom_2mm / sub / "BRAIN-N001.nii.gz")
        write_volume(source, scans / sub / "BRAIN-N001.nii.gz")
    out = tmp_path / "aug"
    args = ["augment", "--scans", str(scans), "--out", str(out), "--checkpoint", str(ASSET), "--organ-masks", str(scans / "organs")]
    args += ["--organ-labels", "3", "--lesions", "3", "--diameter", "5:9", "--shapes", "handcrafted", "--seed", "0", "--no-previews"]
    assert main(args) == 0, capsys.readouterr().err
    source = read_volume(scans / "images" / "BRAIN-N001.nii.gz").array
    organs = read_volume(scans / "organs" / "BRAIN-N001.nii.gz").array
    result = read_volume(out / "images" / "BRAIN-N001.nii.gz").array
    lesions = read_volume(out / "labels" / "BRAIN-N001.nii.gz").array > 0
    assert ndimage.label(lesions, structure=np.ones((3, 3, 3)))[1] == 3 and np.all(organs[lesions] == 3)
    assert np.array_equal(result[~lesions], source[~lesions]), "background bit-identical outside the lesions"
    white = float(np.median(source[(organs == 3) & ~lesions]))
    assert float(np.mean(result[lesions])) > 1.15 * white, "MS lesions are hyperintense on FLAIR"
    assert float(np.mean(result[lesions])) > float(np.mean(source[lesions])), "the lesions were painted brighter than the WM they replace"


def test_geometry_of_a_cut_uses_the_model_spacing():
    """A 1 mm model on a 2 mm brain: the box is 16 x 32 x 32 voxels of 1 mm around the lesion."""
    array = np.zeros((40, 40, 40), np.float32)
    array[5:35, 5:35, 5:35] = np.random.default_rng(0).uniform(80.0, 120.0, (30, 30, 30))
    label = np.zeros(array.shape, np.int64)
    label[18:21, 18:21, 18:21] = 1
    array[label > 0] = 180.0
    image = Volume(array, Geometry(spacing=(2.0, 2.0, 2.0)))
    region = cut_region(image, label, find_lesions(label, (1,))[0], dataclasses.replace(BRAIN_PREPROCESS, spacing=(1.0, 1.0, 1.0)))
    assert region.box.geometry.spacing == (1.0, 1.0, 1.0) and tuple(region.roi.image.shape) == (1, 16, 32, 32)


@pytest.mark.parametrize(
    ("name", "kind", "loss"), [("demo_brain_repaint", "lefusion", "global"), ("demo_brain_cond_diffusion", "cond-diffusion", "global")]
)
def test_bundled_brain_baselines_share_the_demo_preprocessing(name, kind, loss):
    from lefusion.checkpoints import bundled_model_dir, load_model

    folder = bundled_model_dir(name)
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{name} not bundled")
    model = load_model(name)
    demo = json.loads((ASSET / "config.json").read_text())
    assert model.config.kind == kind and model.config.loss == loss and not model.config.mask_input
    assert dataclasses.asdict(model.config.preprocess) == {k: tuple(v) if isinstance(v, list) else v for k, v in demo["preprocess"].items()}
    assert (folder / "model.safetensors").stat().st_size <= 5e6
