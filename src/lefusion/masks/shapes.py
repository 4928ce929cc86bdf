"""Lesion shapes to place in scans, each a bool mask in a box of 1 mm voxels, from three sources:

- "diffmask" (the default): the DiffMask model (bundled `diffmask_lidc`, trained on the LIDC
  radiologists' nodule contours), sampled at the requested equivalent diameter;
- "lidc": real LIDC nodule masks (`lefusion masks lidc`, its train split), the one nearest in
  size to the request, drawn at random among those within 15 % of it;
- "handcrafted": overlapping warped ellipsoids (Hu et al. 2023, `masks.handcrafted`).

`placing.lay_shape` scales a shape to the exact requested size when it lays it on a scan's grid, so
a shape only needs to be about the right size and the right form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from ..diffusion.model import DiffusionModel
from ..diffusion.sampling import SamplerConfig
from ..errors import LeFusionError
from .diffmask import attribute_conditions, model_box, sample_masks
from .handcrafted import handcrafted_mask

SHAPE_SOURCES = ("diffmask", "lidc", "handcrafted")


@dataclass(frozen=True, eq=False)
class Shape:
    """A lesion shape: bool (D, H, W) in 1 mm voxels, and where it came from (for lesions.json)."""

    mask: np.ndarray
    record: dict[str, Any]

    @property
    def equivalent_diameter_mm(self) -> float:
        return float((6.0 * self.mask.sum() / np.pi) ** (1 / 3))

    @property
    def reach_fraction(self) -> float:
        """Farthest voxel corner from the centroid, relative to the equivalent radius (1 for a ball)."""
        voxels = np.argwhere(self.mask)
        reach = np.linalg.norm(voxels - voxels.mean(axis=0), axis=1).max() + np.sqrt(3) / 2
        return float(reach / (self.equivalent_diameter_mm / 2))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a bool mask: a placed lesion is one lesion."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n <= 1:
        return mask.astype(bool)
    return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)


class ShapeSource(Protocol):
    name: str

    def max_diameter_mm(self) -> float: ...
    def draw(self, diameters: Sequence[float], seeds: Sequence[int]) -> list[Shape]: ...


@dataclass(frozen=True, eq=False)
class DiffMaskShapes:
    """Shapes from a DiffMask model: lesion i is sampled with seed seeds[i] at diameters[i], with
    the shape ratings `attributes` (e.g. {"spiculation": 4}; a model conditioned on them) at
    classifier-free guidance scale `guidance`. A bad request fails here, before any scan is read."""

    model: DiffusionModel
    sampler: SamplerConfig | None = None
    batch_size: int = 8
    name: str = "diffmask"
    attributes: dict[str, float] = field(default_factory=dict)
    guidance: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", {k: v for k, v in self.attributes.items() if v is not None})
        attribute_conditions(self.model, self.attributes, 1, self.guidance)

    def max_diameter_mm(self) -> float:
        return float(min(model_box(self.model))) - 4.0  # leave the box a margin of background

    def draw(self, diameters: Sequence[float], seeds: Sequence[int]) -> list[Shape]:
        shapes = []
        for d, seed in zip(diameters, seeds):  # one seed each: a lesion's shape does not depend on the others
            kwargs = {} if self.sampler is None else {"sampler": self.sampler}
            (mask,) = sample_masks(
                self.model,
                1,
                float(d),
                seed=int(seed),
                batch_size=self.batch_size,
                attributes=self.attributes,
                guidance=self.guidance,
                **kwargs,
            )
            if not mask.any():
                raise LeFusionError(f"DiffMask gave an empty mask for {d:.1f} mm (seed {seed})")
            record = {
                "source": "diffmask",
                "checkpoint": str(self.model.source),
                "sha256": self.model.weights_sha256[:16],
                "seed": int(seed),
            }
            if self.attributes:
                record.update(attributes=dict(self.attributes), guidance=self.guidance)
            shapes.append(Shape(largest_component(mask), record))
        return shapes


@dataclass(frozen=True, eq=False)
class LidcShapes:
    """Real nodule masks (N, D, H, W) at 1 mm, e.g. `lidc_masks_train.npz`; `where` names their file."""

    masks: np.ndarray
    where: str
    name: str = "lidc"

    def __post_init__(self) -> None:
        counts = self.masks.reshape(len(self.masks), -1).sum(axis=1)
        if not (counts > 0).any():
            raise LeFusionError(f"{self.where}: holds no non-empty nodule mask")
        object.__setattr__(self, "_diameters", (6.0 * counts / np.pi) ** (1 / 3))

    def max_diameter_mm(self) -> float:
        return float(self._diameters.max()) * 1.5  # scaled up at most by half

    def draw(self, diameters: Sequence[float], seeds: Sequence[int]) -> list[Shape]:
        shapes = []
        for d, seed in zip(diameters, seeds):
            rng = np.random.default_rng(int(seed))
            ratio = self._diameters / float(d)
            close = np.flatnonzero((ratio > 0.85) & (ratio < 1.15))
            index = int(rng.choice(close)) if len(close) else int(np.argmin(np.abs(np.log(np.maximum(ratio, 1e-9)))))
            shapes.append(Shape(self.masks[index].astype(bool), {"source": "lidc", "masks": self.where, "nodule": index}))
        return shapes


@dataclass(frozen=True)
class HandcraftedShapes:
    """Hand-crafted shapes, each drawn from its own seed."""

    name: str = "handcrafted"

    def max_diameter_mm(self) -> float:
        return 80.0

    def draw(self, diameters: Sequence[float], seeds: Sequence[int]) -> list[Shape]:
        shapes = []
        for d, seed in zip(diameters, seeds):
            n = int(np.ceil(1.6 * d)) + 6
            mask = handcrafted_mask((n, n, n), float(d), ((n - 1) / 2,) * 3, generator=np.random.default_rng(int(seed)))
            shapes.append(Shape(mask, {"source": "handcrafted", "seed": int(seed)}))
        return shapes
