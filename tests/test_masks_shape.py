"""Shape descriptors of known solids, and the set distance."""

from __future__ import annotations

import numpy as np
import pytest

from lefusion.errors import LeFusionError
from lefusion.masks.shape import DESCRIPTORS, shape_descriptors, shape_distance


def ellipsoid(semi_axes_mm, spacing=(1.0, 1.0, 1.0), pad=3, offset=(0.0, 0.0, 0.0)) -> np.ndarray:
    half = [int(np.ceil(a / s)) + pad for a, s in zip(semi_axes_mm, spacing)]
    grid = np.meshgrid(*[(np.arange(-h, h + 1) - o) * s for h, s, o in zip(half, spacing, offset)], indexing="ij")
    return sum((g / a) ** 2 for g, a in zip(grid, semi_axes_mm)) <= 1.0


def test_sphere():
    d = shape_descriptors(ellipsoid((10, 10, 10)))
    assert set(d) == set(DESCRIPTORS)
    assert d["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 1000, rel=0.02)
    assert d["equivalent_diameter_mm"] == pytest.approx(20.0, rel=0.01)
    assert d["surface_area_mm2"] == pytest.approx(4 * np.pi * 100, rel=0.1)
    # A voxelised sphere's marching-cubes surface is faceted: sphericity ~0.91, not exactly 1.
    assert 0.88 < d["sphericity"] <= 1.0
    assert d["elongation"] == pytest.approx(1.0, abs=0.01) and d["flatness"] == pytest.approx(1.0, abs=0.01)
    assert d["extent"] == pytest.approx(4 / 3 * np.pi * 1000 / 21**3, rel=0.02)  # bounding box: 21 voxels a side
    assert d["solidity"] > 0.9 and d["component_count"] == 1


def test_sphere_with_anisotropic_spacing():
    d = shape_descriptors(ellipsoid((8, 8, 8), spacing=(2.0, 0.5, 0.5)), spacing=(2.0, 0.5, 0.5))
    assert d["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 512, rel=0.05)
    assert d["elongation"] > 0.95 and d["flatness"] > 0.9


def test_box():
    mask = np.zeros((30, 30, 30), bool)
    mask[2:22, 5:15, 5:10] = True  # 20 x 10 x 5 voxels
    d = shape_descriptors(mask, spacing=(1.0, 2.0, 2.0))  # 20 x 20 x 10 mm
    assert d["volume_mm3"] == pytest.approx(4000.0)
    assert d["extent"] == pytest.approx(1.0)
    assert d["solidity"] == pytest.approx(1.0, abs=0.01)
    # Uniform box of sides L: variance L^2 / 12 per axis (voxel centres: (n^2 - 1) / 12 spacing^2).
    var = np.array([(20**2 - 1) / 12, (10**2 - 1) / 12 * 4, (5**2 - 1) / 12 * 4])
    assert d["elongation"] == pytest.approx(np.sqrt(var[1] / var[0]), rel=1e-6)
    assert d["flatness"] == pytest.approx(np.sqrt(var[2] / var[0]), rel=1e-6)
    assert d["sphericity"] < 0.85
    assert d["surface_area_mm2"] == pytest.approx(2 * (20 * 20 + 20 * 10 + 20 * 10), rel=0.1)


def test_components_use_26_connectivity_and_empty_mask_raises():
    mask = np.zeros((10, 10, 10), bool)
    mask[2, 2, 2] = mask[3, 3, 3] = True  # corner-touching: one component
    mask[7:9, 7:9, 7:9] = True
    assert shape_descriptors(mask)["component_count"] == 2
    with pytest.raises(LeFusionError):
        shape_descriptors(np.zeros((5, 5, 5)))


def _spheres(rng, n=12):
    return [shape_descriptors(ellipsoid([r] * 3, offset=rng.uniform(-0.5, 0.5, 3))) for r in rng.uniform(4, 8, n)]


def test_distance_zero_for_identical_sets_and_grows_with_divergence():
    rng = np.random.default_rng(0)
    spheres = _spheres(rng)
    d0 = shape_distance(spheres, spheres)
    assert d0["score"] == 0.0 and set(d0) == set(DESCRIPTORS) | {"score"}
    perturbed = []  # spheres with slightly different radii per axis
    for r in rng.uniform(4, 8, 12):
        perturbed.append(shape_descriptors(ellipsoid(r * rng.uniform(0.9, 1.1, 3))))
    elongated = []  # same volumes, stretched 2.5 x along one axis
    for r in rng.uniform(4, 8, 12):
        k = 2.5 ** (1 / 3)
        elongated.append(shape_descriptors(ellipsoid((r * k * k, r / k, r / k))))
    near = shape_distance(spheres, perturbed)
    far = shape_distance(spheres, elongated)
    assert 0 < near["score"] < far["score"]
    assert far["elongation"] > 3 * near["elongation"]
    assert far["score"] == pytest.approx(np.mean([far[k] for k in DESCRIPTORS]))
    # The scale is the reference set's spread: a wider reference shrinks the distance.
    assert shape_distance(spheres, elongated, reference=spheres + elongated)["score"] < far["score"]


def test_distance_errors():
    with pytest.raises(LeFusionError):
        shape_distance([], [{"volume_mm3": 1.0}])
    with pytest.raises(LeFusionError):
        shape_distance([{"volume_mm3": 1.0}], [{"volume_mm3": 2.0}])  # other keys missing
