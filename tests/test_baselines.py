"""Copy-Paste and Hand-Crafted texture baselines: unit properties, and `lefusion generate --method` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lefusion.baselines import DonorLesion, copy_paste, handcrafted_texture, histogram_moments, paste_values
from lefusion.baselines.donors import load_donors
from lefusion.cli import main
from lefusion.data.conventions import conventions_for
from lefusion.demo import demo_model_dir
from lefusion.errors import LeFusionError
from lefusion.generation import GenerateConfig, generate_dataset
from lefusion.generation.baseline_methods import make_baseline
from lefusion.io import Volume, read_volume, write_volume
from lefusion.phantoms import write_lung_phantom

SHAPE = (6, 10, 10)


def _ball(centre: tuple[float, float, float], radius: float, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


def _roi() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(1).uniform(-1, -0.6, SHAPE).astype(np.float32)
    label = _ball((3, 5, 5), 2.2).astype(np.int64)
    return image, label


def _donor(seed: int = 0, label: int = 1, source: str = "donor.nii.gz") -> DonorLesion:
    coords = np.argwhere(_ball((2, 3, 3), 1.5, (5, 7, 7)))
    values = np.random.default_rng(seed).uniform(0.2, 0.6, len(coords)).astype(np.float32)
    return DonorLesion(source, label, coords, values)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -------------------------------------------------------------------------------------- hand-crafted


def test_histogram_moments():
    one_hot = np.eye(16)[3]
    mean, std = histogram_moments(one_hot)
    assert mean == pytest.approx(-1 + 2 / 16 * 3.5) and std == pytest.approx((2 / 16) / math.sqrt(12))
    mean, std = histogram_moments(np.ones(16))  # uniform over [-1, 1]: mean 0, variance 1/3
    assert mean == pytest.approx(0.0, abs=1e-12) and std == pytest.approx(math.sqrt(1 / 3))
    assert histogram_moments(np.zeros(16)) is None


def test_handcrafted_texture_fills_only_the_mask_with_the_target_statistics():
    image, label = _roi()
    out = handcrafted_texture(image, label, (1,), _gen(0), means=[0.1], stds=[0.05], sigma=1.0)
    inside = label == 1
    assert out.image.dtype == image.dtype
    assert np.array_equal(out.image[~inside], image[~inside])  # bit-exact background
    assert not np.array_equal(out.image[inside], image[inside])
    assert out.image[inside].mean() == pytest.approx(0.1, abs=1e-6)
    assert out.image[inside].std() == pytest.approx(0.05, rel=1e-4)
    assert out.record["texture_mean"] == [0.1] and out.record["smoothing_voxels"] == 1.0


def test_handcrafted_texture_is_deterministic_by_seed_and_smoothing_correlates_neighbours():
    image, label = _roi()
    a = handcrafted_texture(image, label, (1,), _gen(5), means=[0.0], stds=[0.2]).image
    b = handcrafted_texture(image, label, (1,), _gen(5), means=[0.0], stds=[0.2]).image
    c = handcrafted_texture(image, label, (1,), _gen(6), means=[0.0], stds=[0.2]).image
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    rough = handcrafted_texture(image, label, (1,), _gen(5), means=[0.0], stds=[0.2], sigma=0).image
    smooth = handcrafted_texture(image, label, (1,), _gen(5), means=[0.0], stds=[0.2], sigma=2.0).image

    def neighbour_gap(x: np.ndarray) -> float:
        both = (label[:, :, 1:] == 1) & (label[:, :, :-1] == 1)
        return float(np.abs(np.diff(x, axis=2))[both].mean())

    assert neighbour_gap(smooth) < neighbour_gap(rough) / 2


def test_handcrafted_texture_multi_class():
    image, _ = _roi()
    label = np.zeros(SHAPE, np.int64)
    label[1:3] = 3
    label[4:6] = 4
    out = handcrafted_texture(image, label, (3, 4), _gen(0), means=[0.5, -0.5], stds=[0.1, 0.1]).image
    assert out[label == 3].mean() == pytest.approx(0.5, abs=1e-6) and out[label == 4].mean() == pytest.approx(-0.5, abs=1e-6)


# ---------------------------------------------------------------------------------------- copy-paste


def test_paste_values_copies_an_identical_shape_voxel_for_voxel():
    donor = _donor()
    target = donor.coords + np.array([1, 2, 0])  # the same lesion elsewhere
    assert np.array_equal(paste_values(target, donor), donor.values)


def test_paste_values_fills_a_larger_target_from_the_donor_only():
    donor = _donor()
    target = np.argwhere(_ball((3, 5, 5), 2.8))
    values = paste_values(target, donor)
    assert len(values) == len(target) and set(values.tolist()) <= set(donor.values.tolist())
    # the centre voxel is covered after aligning centroids, so it takes the donor's centre voxel
    centre = int(np.flatnonzero((target == [3, 5, 5]).all(1))[0])
    assert values[centre] == donor.values[int(np.flatnonzero((donor.coords == [2, 3, 3]).all(1))[0])]


def test_copy_paste_keeps_background_and_takes_intensities_from_a_donor():
    image, label = _roi()
    donors = [_donor(0, source="a"), _donor(1, source="b"), _donor(2, source="c")]
    out = copy_paste(image, label, (1,), _gen(0), donors=donors)
    inside = label == 1
    assert np.array_equal(out.image[~inside], image[~inside])
    chosen = next(d for d in donors if d.source == out.record["donors"]["1"])
    assert set(out.image[inside].tolist()) <= set(chosen.values.tolist())
    again = copy_paste(image, label, (1,), _gen(0), donors=donors)
    assert np.array_equal(out.image, again.image)
    picks = {copy_paste(image, label, (1,), _gen(s), donors=donors).record["donors"]["1"] for s in range(20)}
    assert picks == {"a", "b", "c"}, "the donor is drawn at random by the seed"


def test_copy_paste_errors():
    image, label = _roi()
    with pytest.raises(LeFusionError, match="no donor lesion with label 1"):
        copy_paste(image, label, (1,), _gen(0), donors=[_donor(label=2)])
    with pytest.raises(LeFusionError, match="empty donor lesion"):
        DonorLesion("empty.nii.gz", 1, np.zeros((0, 3), np.int64), np.zeros(0, np.float32))


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def lung(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baselines") / "lung"
    write_lung_phantom(root, n_pathological=4, n_normal=2, n_test=1, seed=0, roi_shape=(8, 16, 16), spacing=(2.0, 2.0, 2.0))
    return root


def _outputs(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["outputs"]


def _check_on_disk(out: Path, method: str) -> None:
    for entry in _outputs(out).values():
        source, mask = read_volume(entry["source_image"]), read_volume(entry["source_mask"]).array
        generated = read_volume(out / entry["image"])
        assert entry["method"] == method and entry["source_role"] == "normal"
        assert generated.array.dtype == source.array.dtype and generated.geometry.matches(source.geometry)
        assert np.array_equal(generated.array[mask == 0], source.array[mask == 0])
        assert not np.array_equal(generated.array[mask > 0], source.array[mask > 0])
        assert np.array_equal(read_volume(out / entry["label"]).array, mask)
        assert (out / entry["preview"]).is_file()


def test_cli_copy_paste_end_to_end_resume_and_determinism(lung, tmp_path):
    args = ["generate", "--method", "copy-paste", "--data", str(lung), "--donors", str(lung)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    _check_on_disk(tmp_path / "a", "copy-paste")
    outputs = _outputs(tmp_path / "a")
    assert len(outputs) == 2
    test_case = (lung / "Pathological" / "test.txt").read_text().split()[0]
    donors = load_donors(lung, conventions_for(lung))
    assert test_case not in {Path(d.source).name for d in donors} and len(donors) == 3  # held-out cases are never donors
    for entry in outputs.values():  # lesion intensities are a donor's lesion intensities (int16 HU round trip)
        donor_path = entry["donors"]["1"]
        donor_mask = read_volume(donor_path.replace("/Image/", "/Mask/").replace("Vol_", "Mask_")).array
        donor_hu = set(np.clip(read_volume(donor_path).array[donor_mask == 1], -1000, 400).tolist())
        lesion = read_volume(entry["source_mask"]).array == 1
        assert set(read_volume(tmp_path / "a" / entry["image"]).array[lesion].tolist()) <= donor_hu

    stamps = {n: (tmp_path / "a" / e["image"]).stat().st_mtime_ns for n, e in outputs.items()}
    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # resume: everything done, nothing rewritten
    assert all((tmp_path / "a" / outputs[n]["image"]).stat().st_mtime_ns == t for n, t in stamps.items())
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for entry in outputs.values():
        assert np.array_equal(read_volume(tmp_path / "a" / entry["image"]).array, read_volume(tmp_path / "b" / entry["image"]).array)
    assert main([*args, "--out", str(tmp_path / "a"), "--seed", "1"]) == 2  # other settings, same folder: refused


def test_copy_paste_never_copies_a_case_onto_itself(lung, tmp_path):
    baseline = make_baseline("copy-paste", lung / "Pathological", donors=lung)
    generate_dataset(baseline, lung / "Pathological", tmp_path / "p", GenerateConfig(previews=False), progress=False)
    for entry in _outputs(tmp_path / "p").values():
        assert Path(entry["donors"]["1"]).resolve() != Path(entry["source_image"]).resolve()


def test_cli_handcrafted_with_presets_and_with_texture(lung, tmp_path):
    base = ["generate", "--method", "handcrafted", "--data", str(lung)]
    assert main([*base, "--out", str(tmp_path / "p"), "--donors", str(lung), "--preset", "1", "3"]) == 0
    _check_on_disk(tmp_path / "p", "handcrafted")
    outputs = _outputs(tmp_path / "p")
    assert len(outputs) == 4 and {e["condition"] for e in outputs.values()} == {"1", "3"}
    means = {e["condition"]: e["texture_mean"][0] for e in outputs.values()}
    assert means["1"] < means["3"], "presets are ordered faint -> dense, so is the texture they give"

    assert main([*base, "--out", str(tmp_path / "t"), "--texture", "-100", "40", "--smoothing", "0.5"]) == 0
    _check_on_disk(tmp_path / "t", "handcrafted")
    spread_checked = 0
    for entry in _outputs(tmp_path / "t").values():
        lesion = read_volume(entry["source_mask"]).array == 1
        values = read_volume(tmp_path / "t" / entry["image"]).array[lesion].astype(float)
        assert values.mean() == pytest.approx(-100, abs=1.0)
        if lesion.sum() > 20:  # a std of a handful of voxels is not a measurement
            assert values.std() == pytest.approx(40, rel=0.05)
            spread_checked += 1
    assert spread_checked >= 1, "no lesion was large enough to check the texture's spread"


def test_handcrafted_with_a_checkpoint_uses_its_conventions_and_presets(lung, tmp_path):
    assert (
        main(
            [
                "generate",
                "--method",
                "handcrafted",
                "--checkpoint",
                str(demo_model_dir()),
                "--data",
                str(lung),
                "--out",
                str(tmp_path / "g"),
                "--preset",
                "all",
                "--max-cases",
                "1",
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["method"] == "handcrafted" and manifest["conventions"]["preprocess"]["roi_shape"] == [16, 32, 32]
    assert sorted(e["preset"] for e in manifest["outputs"].values()) == [1, 2, 3]


def test_generate_flag_errors(lung, tmp_path, capsys):
    out = ["--out", str(tmp_path / "x")]
    assert main(["generate", "--data", str(lung), *out]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
    assert main(["generate", "--method", "copy-paste", "--data", str(lung), *out]) == 2
    assert "needs --donors" in capsys.readouterr().err
    assert main(["generate", "--method", "copy-paste", "--data", str(lung), "--donors", str(lung), "--preset", "1", *out]) == 2
    assert "do not apply" in capsys.readouterr().err
    assert main(["generate", "--method", "handcrafted", "--data", str(lung), *out]) == 2
    assert "no texture presets" in capsys.readouterr().err
    assert main(["generate", "--method", "copy-paste", "--data", str(lung), "--donors", str(lung / "Normal"), *out]) == 2
    assert "no pathological cases" in capsys.readouterr().err
    assert not (tmp_path / "x").exists(), "nothing is written when the input is refused"


def test_an_empty_donor_mask_is_reported_by_name(tmp_path):
    root = tmp_path / "lung"
    write_lung_phantom(root, n_pathological=3, n_normal=1, n_test=1, seed=0, roi_shape=(8, 16, 16), spacing=(2.0, 2.0, 2.0))
    held_out = (root / "Pathological" / "test.txt").read_text().split()
    train = [m for m in sorted((root / "Pathological" / "Mask").glob("*.nii.gz")) if m.name.replace("Mask_", "Vol_")[:-7] not in held_out]
    mask = read_volume(train[0])
    write_volume(Volume(np.zeros_like(mask.array), mask.geometry), train[0])
    with pytest.raises(LeFusionError, match=f"{train[0].name}: empty lesion mask"):
        make_baseline("copy-paste", root, donors=root)


def test_two_class_cardiac_baselines(tmp_path):
    """EMIDEC layout, MRI: MI (3) and PMO (4) each filled from their own class; cavity/myocardium kept."""
    from lefusion.phantoms import write_cardiac_phantom

    root = tmp_path / "cardiac"
    write_cardiac_phantom(root, n_pathological=4, n_normal=2, seed=0, roi_shape=(4, 32, 32), spacing=(8.0, 3.0, 3.0))
    for method, extra in (("copy-paste", []), ("handcrafted", ["--preset", "1"])):
        out = tmp_path / method
        assert main(["generate", "--method", method, "--data", str(root), "--donors", str(root), "--out", str(out), *extra]) == 0
        for entry in _outputs(out).values():
            source, label = read_volume(entry["source_image"]).array, read_volume(entry["source_mask"]).array
            generated = read_volume(out / entry["image"]).array
            background = ~np.isin(label, (3, 4))
            assert np.array_equal(generated[background], source[background])
            assert not np.array_equal(generated[label == 3], source[label == 3])
            if method == "copy-paste":
                assert set(entry["donors"]) == {str(c) for c in (3, 4) if (label == c).any()}
