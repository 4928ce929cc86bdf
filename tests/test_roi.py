"""ROI preprocessing: crop/pad placement, intensity maps, exact inversion, pair validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lefusion.config import PreprocessConfig
from lefusion.data.roi import RoiBox, prepare_roi, restore_roi, validate_pair
from lefusion.errors import LeFusionError
from lefusion.io import Geometry, Volume

CT = PreprocessConfig(modality="ct", roi_shape=(4, 12, 7))
MRI = PreprocessConfig(modality="mri", roi_shape=(4, 12, 7))
SHAPE = (6, 9, 12)  # D cropped by 2, H padded by 3, W cropped by 5


def _ct(rng: np.random.Generator, lo: float = -1000, hi: float = 400) -> Volume:
    return Volume(rng.uniform(lo, hi, SHAPE).astype(np.float32), Geometry(spacing=(2.0, 0.7, 0.7)))


def test_box_is_centred_with_extra_voxel_at_start() -> None:
    box = RoiBox.centred(SHAPE, CT.roi_shape)
    assert box.crop_before == (1, 0, 3)  # W: 5 removed -> 3 at the start, 2 at the end
    assert box.pad_before == (0, 2, 0)  # H: 3 added -> 2 at the start, 1 at the end
    src, dst = box.slices()
    assert src == (slice(1, 5), slice(0, 9), slice(3, 10))
    assert dst == (slice(0, 4), slice(2, 11), slice(0, 7))


def test_ct_crop_pad_and_mapping() -> None:
    rng = np.random.default_rng(0)
    image = _ct(rng, -2000, 2000)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[3, 4, 6] = 1
    roi = prepare_roi(image, Volume(label, image.geometry), CT, image_path="img.nii.gz")
    assert roi.image.shape == (1, 4, 12, 7) and roi.image.dtype == torch.float32
    assert roi.label.shape == (1, 4, 12, 7) and roi.label.dtype == torch.int64
    assert (roi.mapping.modality, roi.mapping.lo, roi.mapping.hi) == ("ct", -1000.0, 400.0)
    # Padded rows: image -1 (air), label 0.
    assert torch.all(roi.image[0, :, :2] == -1) and torch.all(roi.image[0, :, 11:] == -1)
    assert roi.label.sum() == 1 and roi.label[0, 3 - 1, 4 + 2, 6 - 3] == 1
    expected = np.clip(image.array[1:5, :, 3:10], -1000, 400)
    expected = (expected.astype(np.float64) + 1000) / 1400 * 2 - 1
    np.testing.assert_allclose(roi.image[0, :, 2:11].numpy(), expected, atol=1e-6)
    assert roi.image.min() >= -1 and roi.image.max() <= 1


def test_ct_round_trip_inside_window() -> None:
    rng = np.random.default_rng(1)
    image = _ct(rng)
    roi = prepare_roi(image, None, CT)
    assert torch.all(roi.label == 0)
    restored = restore_roi(roi, roi.image.clone(), image)
    assert restored.shape == SHAPE
    np.testing.assert_allclose(restored, image.array, atol=1e-3)
    # The pure inverse map (what an edited voxel gets) is also within float tolerance.
    src, dst = roi.box.slices()
    inverse = roi.mapping.inverse(roi.image[0].numpy()[dst])
    np.testing.assert_allclose(inverse, image.array[src], atol=1e-3)


def test_restore_edits_only_changed_voxels_and_keeps_outside_box() -> None:
    rng = np.random.default_rng(2)
    image = _ct(rng, -1500, 1500)  # some voxels outside the window: clamped in the ROI
    image.array[0, 0, 0] = 3000.0
    roi = prepare_roi(image, None, CT)
    generated = roi.image.clone()
    generated[0, 1, 3, 2] = 0.0  # mid-window: -300 HU
    generated[0, 2, 5, 4] = 7.0  # out of range: clamped to 1 = +400 HU
    restored = restore_roi(roi, generated, image)
    src, dst = roi.box.slices()
    outside = np.ones(SHAPE, dtype=bool)
    outside[src] = False
    assert np.array_equal(restored[outside], image.array[outside])  # bit-exact
    assert restored[0, 0, 0] == 3000.0
    assert restored[1 + 1, 3 - 2, 2 + 3] == pytest.approx(-300.0, abs=1e-3)
    assert restored[2 + 1, 5 - 2, 4 + 3] == pytest.approx(400.0, abs=1e-3)
    changed = np.zeros(SHAPE, dtype=bool)
    changed[2, 1, 5] = changed[3, 3, 7] = True
    # Unchanged voxels inside the box, even clamped ones, come back exactly.
    assert np.array_equal(restored[~changed], image.array[~changed])


def test_restore_keeps_integer_hu_exact() -> None:
    rng = np.random.default_rng(3)
    image = Volume(rng.integers(-1024, 3000, SHAPE).astype(np.int16))
    roi = prepare_roi(image, None, CT)
    restored = restore_roi(roi, roi.image, image)
    assert restored.dtype == np.float32
    assert np.array_equal(restored, image.array.astype(np.float32))


def test_mri_round_trip() -> None:
    rng = np.random.default_rng(4)
    image = Volume(rng.uniform(10, 500, SHAPE).astype(np.float32))
    roi = prepare_roi(image, None, MRI)
    assert roi.mapping.modality == "mri"
    assert roi.mapping.lo == pytest.approx(image.array.min()) and roi.mapping.hi == pytest.approx(image.array.max())
    inner = roi.image[0, :, 2:11]  # the unpadded part
    assert inner.min() >= -1 and inner.max() <= 1
    assert np.array_equal(restore_roi(roi, roi.image, image), image.array)
    src, dst = roi.box.slices()
    np.testing.assert_allclose(roi.mapping.inverse(roi.image[0].numpy()[dst]), image.array[src], rtol=1e-5)
    generated = roi.image.clone()
    generated[0, 0, 2, 0] = 1.0
    generated[0, 0, 3, 0] = -1.0
    restored = restore_roi(roi, generated, image)
    assert restored[1, 0, 3] == pytest.approx(image.array.max(), rel=1e-6)
    assert restored[1, 1, 3] == pytest.approx(image.array.min(), rel=1e-6)


def test_mri_constant_image_names_file() -> None:
    with pytest.raises(LeFusionError, match=r"flat\.nii\.gz: constant intensity"):
        prepare_roi(Volume(np.full(SHAPE, 7.0, np.float32)), None, MRI, image_path="flat.nii.gz")


def test_restore_rejects_wrong_shapes() -> None:
    image = _ct(np.random.default_rng(5))
    roi = prepare_roi(image, None, CT, image_path="a.nii.gz")
    with pytest.raises(LeFusionError, match=r"a\.nii\.gz: generated ROI has shape"):
        restore_roi(roi, torch.zeros(1, 4, 12, 8), image)
    with pytest.raises(LeFusionError, match="original volume has shape"):
        restore_roi(roi, roi.image, Volume(np.zeros((6, 9, 11), np.float32)))


# ---------------------------------------------------------------------------------- validate_pair


def _pair(label_values: np.ndarray | None = None) -> tuple[Volume, Volume]:
    image = Volume(np.zeros((3, 4, 5), np.float32), Geometry(spacing=(2.0, 1.0, 1.0)))
    label = np.zeros((3, 4, 5), np.uint8) if label_values is None else label_values
    if label_values is None:
        label[1, 2, 3] = 1
    return image, Volume(label, image.geometry)


def _check(image: Volume, label: Volume | None, **kw) -> None:
    args = dict(lesion_labels=(1,), allowed_labels=(0, 1), image_path="img.nii.gz", label_path="lab.nii.gz")
    args.update(kw)
    validate_pair(image, label, **args)


def test_validate_accepts_good_pair() -> None:
    _check(*_pair())
    image, label = _pair()
    label.array[:] = 0
    _check(image, label, require_lesion=False)


def test_validate_shape_mismatch() -> None:
    image, _ = _pair()
    with pytest.raises(LeFusionError, match=r"img\.nii\.gz and lab\.nii\.gz: shape mismatch"):
        _check(image, Volume(np.ones((3, 4, 6), np.uint8), image.geometry))


def test_validate_geometry_mismatch() -> None:
    image, label = _pair()
    moved = Volume(label.array, Geometry(spacing=(2.0, 1.0, 1.0), origin=(5.0, 0.0, 0.0)))
    with pytest.raises(LeFusionError, match=r"img\.nii\.gz and lab\.nii\.gz: geometry mismatch"):
        _check(image, moved)


def test_validate_empty_lesion() -> None:
    image, label = _pair()
    label.array[:] = 0
    with pytest.raises(LeFusionError, match=r"lab\.nii\.gz: empty lesion mask"):
        _check(image, label)
    label.array[0, 0, 0] = 2  # a non-lesion label does not count as a lesion
    with pytest.raises(LeFusionError, match="empty lesion mask"):
        _check(image, label, allowed_labels=(0, 1, 2))


def test_validate_unknown_labels_listed() -> None:
    image, label = _pair()
    label.array[0, 0, 0] = 255
    label.array[0, 0, 1] = 7
    with pytest.raises(LeFusionError, match=r"lab\.nii\.gz: unknown label values \[7, 255\]"):
        _check(image, label)


def test_validate_non_integer_labels() -> None:
    image, label = _pair()
    values = label.array.astype(np.float32)
    values[0, 0, 0] = 0.5
    with pytest.raises(LeFusionError, match=r"lab\.nii\.gz: label has non-integer values \[0\.5\]"):
        _check(image, Volume(values, image.geometry))


def test_validate_nan_image() -> None:
    image, label = _pair()
    image.array[0, 1, 2] = np.nan
    image.array[0, 1, 3] = np.inf
    with pytest.raises(LeFusionError, match=r"img\.nii\.gz: contains 2 NaN/Inf"):
        _check(image, label)


def test_axis_permutation_round_trip_and_orientation():
    """A model fed (i, j, k) tensors (the published LIDC model) sees the disk array transposed."""

    from lefusion.config import PreprocessConfig
    from lefusion.data.roi import prepare_roi, restore_roi
    from lefusion.io import Volume

    rng = np.random.default_rng(0)
    array = rng.uniform(-900, 300, size=(6, 5, 4)).astype(np.float32)  # disk order (k, j, i)
    config = PreprocessConfig(modality="ct", roi_shape=(4, 5, 6), axes=(2, 1, 0))
    roi = prepare_roi(Volume(array), None, config)
    assert roi.image.shape == (1, 4, 5, 6)
    expected = (np.clip(array, -1000, 400) + 1000) / 1400 * 2 - 1
    np.testing.assert_allclose(roi.image[0].numpy(), expected.transpose(2, 1, 0), atol=1e-6)
    changed = roi.image.clone()
    changed[0, 1, 2, 3] = 0.0  # one voxel in model axes (i=1, j=2, k=3)
    out = restore_roi(roi, changed, Volume(array))
    assert out.shape == array.shape
    diff = np.argwhere(out != array)
    assert diff.tolist() == [[3, 2, 1]]  # back in disk order (k, j, i)
