"""Hand-crafted lesion masks (Hu et al. 2023 style): size control, boundary, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lefusion.errors import LeFusionError
from lefusion.masks.handcrafted import handcrafted_mask


def equivalent_diameter(mask: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    return float((6.0 * mask.sum() * np.prod(spacing) / np.pi) ** (1 / 3))


@pytest.mark.parametrize("diameter", [4.0, 8.0, 16.0, 25.0])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7)])
def test_equivalent_diameter_matches_request(diameter, spacing):
    shape = (48, 96, 96)
    centre = tuple((n - 1) / 2 for n in shape)
    for seed in range(3):
        mask = handcrafted_mask(shape, diameter, centre, spacing, np.random.default_rng(seed))
        assert mask.dtype == bool and mask.shape == shape
        tol = 0.03 if diameter >= 8 else 0.08  # a 4 mm lesion is a few dozen voxels
        assert abs(equivalent_diameter(mask, spacing) / diameter - 1) < tol


def test_shapes_are_random_lobulated_and_deterministic():
    shape, centre = (40, 40, 40), (20, 20, 20)
    a = handcrafted_mask(shape, 14.0, centre, generator=np.random.default_rng(7))
    b = handcrafted_mask(shape, 14.0, centre, generator=np.random.default_rng(7))
    c = handcrafted_mask(shape, 14.0, centre, generator=np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert (a ^ c).sum() > 0.1 * a.sum()
    # Not a ball: the warp and extra lobes leave a visibly irregular outline.
    r = 7.0
    ball = (np.indices(shape) - 20.0) ** 2
    ball = ball.sum(0) <= r * r
    assert (a ^ ball).sum() > 0.15 * a.sum()
    _, n = ndimage.label(a, structure=np.ones((3, 3, 3)))
    assert n <= 2  # one lesion (a detached speck at most)


def test_boundary_clips_the_lesion():
    shape = (32, 48, 48)
    boundary = np.zeros(shape, bool)
    boundary[:, :, :24] = True  # the lesion is centred on the organ's edge
    free = handcrafted_mask(shape, 14.0, (16, 24, 24), generator=np.random.default_rng(1))
    clipped = handcrafted_mask(shape, 14.0, (16, 24, 24), generator=np.random.default_rng(1), boundary=boundary)
    assert not (clipped & ~boundary).any()
    assert np.array_equal(clipped, free & boundary) and 0 < clipped.sum() < free.sum()


def test_lesion_at_the_array_edge_and_bad_arguments():
    mask = handcrafted_mask((20, 20, 20), 10.0, (0, 10, 10), generator=np.random.default_rng(0))
    assert 0 < mask.sum() and mask[0].any()
    with pytest.raises(LeFusionError):
        handcrafted_mask((20, 20, 20), 0.0, (10, 10, 10), generator=np.random.default_rng(0))
    with pytest.raises(LeFusionError):
        handcrafted_mask((20, 20, 20), 5.0, (10, 10, 10), boundary=np.ones((5, 5, 5), bool))
