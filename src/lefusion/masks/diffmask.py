"""DiffMask: a diffusion model over lesion MASKS with size and location control (LeFusion, sec. 3.3).

The network is the package's 3D U-Net (:class:`~lefusion.models.Denoiser`) with two input channels,
the noisy mask x_t and a *control sphere*, and one output channel, the predicted noise; there is
no histogram condition (``cond_dim=None``) unless the model is conditioned on radiologist shape
ratings (``extra['diffmask']['attributes']``): then the condition vector carries them
(:mod:`lefusion.control.attributes`) and sampling can apply classifier-free guidance
(:mod:`lefusion.diffusion.guidance`). Masks live in [-1, 1] (``mask * 2 - 1``), axes
(z, y, x), 1 mm isotropic voxels, in a fixed box (D, H, W) centred on the lesion.

Conditioning (a deliberate change from the public release). The release trains on each mask's
*bounding* sphere, so a requested sphere of diameter d yields a lesion of unknown, smaller size.
Users state size the way radiologists do, as the EQUIVALENT DIAMETER (diameter of the sphere of
equal volume, mm), so we condition on the sphere of the mask's own equivalent diameter centred at
the mask's centroid: the requested diameter and centre map directly onto the generated lesion's
equivalent diameter and centroid. :func:`control_sphere` rasterises such a sphere with exactly the
requested volume (the k voxels nearest the centre, k = round(V / voxel volume)), so training
spheres have exactly their mask's voxel count. A model trained with ``control="ellipsoid"``
conditions instead on the ellipsoid with the mask's volume, centroid and second moments, and at
sampling draws those proportions from its training lesions (:mod:`lefusion.masks.control_region`).

Parameterisation. The network predicts either the noise eps (DDPM's choice, and the public
release's) or the clean mask x0 directly (``extra['diffmask']['prediction']``; our training
default is "x0"). Why x0 for masks: at high noise the eps form recovers x0 as
(x_t - sqrt(1 - abar) eps) / sqrt(abar), which multiplies every error in eps by
sqrt((1 - abar) / abar), about 100 at the first step of a cosine schedule. A mask is almost all
background, and an eps model trained for a few hundred steps turned those amplified errors into
lesions that filled the whole box when no boundary held them in. Predicting x0 bounds the error
by the data range. "v" (Salimans & Ho 2022) keeps that bound at high noise (x0 = sqrt(abar) x_t -
sqrt(1 - abar) v) while weighting low-noise steps like eps does; an x0 loss gives those steps,
where a mask's fine boundary is drawn, a weight of only 1/SNR.

Sampling (:func:`sample_masks`) is plain ancestral DDPM over all T steps (Ho et al. 2020, Alg. 2)
with the sphere channel concatenated at every step. An optional boundary mask (e.g. the lung)
is enforced at every reverse step and once more after post-processing, so every sample lies 100 %
inside it. :func:`postprocess` smooths, thresholds and keeps the component(s) touching the sphere.
The threshold defaults to "size": per sample, the level at which the kept lesion has the requested
volume, so size control does not depend on how well the network is calibrated (a fixed level of 0
left 14 of 200 small requests empty with the bundled model; docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from ..checkpoints.loading import load_model
from ..config import DenoiserConfig, ModelConfig, Prediction, PreprocessConfig, ScheduleConfig
from ..control.attributes import SHAPE_ATTRIBUTES, check_attributes, encode_ratings, ratings_row
from ..diffusion.guidance import Guided
from ..diffusion.model import DiffusionModel
from ..diffusion.sampling import Ancestral, KnownRegion, Network, Noise, SamplerConfig
from ..errors import LeFusionError
from .control_region import SPACING_MM, ControlKind, control_region, mask_control, unpack_form

BoundaryMode = Literal["noised", "hard"]
Threshold = float | Literal["size"]  # a fixed level in [-1, 1], or "size": see postprocess
DEFAULT_SMOOTHING_SIGMA = 0.5  # voxels; see postprocess
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity, as shape_descriptors counts components


def diffmask_model_config(
    denoiser: DenoiserConfig, timesteps: int, box: Sequence[int], prediction: Prediction = "eps", attributes: Sequence[str] = ()
) -> ModelConfig:
    """ModelConfig of a DiffMask: `denoiser`'s widths/attention with DiffMask's channel layout
    forced (channels 1, extra_in_channels 1 = control sphere, cond_dim None, or 2 x len(attributes)
    for a model conditioned on radiologist ratings, :mod:`lefusion.control.attributes`), a cosine
    schedule of `timesteps` steps, and `box` (D, H, W) voxels recorded as the ROI shape.
    Raises LeFusionError when H or W is not divisible by 2^(levels - 1) (D is never downsampled)."""
    box = tuple(int(v) for v in box)
    unknown = sorted(set(attributes) - set(SHAPE_ATTRIBUTES))
    if unknown or len(set(attributes)) != len(attributes):
        raise LeFusionError(f"attributes {list(attributes)}: each at most once, from {', '.join(SHAPE_ATTRIBUTES)}")
    cond_dim = 2 * len(attributes) if attributes else None
    den = dataclasses.replace(denoiser, channels=1, extra_in_channels=1, cond_dim=cond_dim)
    factor = 2 ** (len(den.dim_mults) - 1)
    if len(box) != 3 or min(box) < 1 or box[1] % factor or box[2] % factor:
        raise LeFusionError(f"box {box}: need (D, H, W) with H and W divisible by {factor} for dim_mults {den.dim_mults}")
    return ModelConfig(
        denoiser=den,
        schedule=ScheduleConfig(timesteps=int(timesteps)),
        preprocess=PreprocessConfig(modality="ct", roi_shape=box),
        lesion_labels=(1,),
        loss="global",
        source="diffmask",
        kind="diffmask",
        prediction=prediction,
    )


def control_sphere(
    shape: Sequence[int], center_zyx: Sequence[float], diameter_mm: float, spacing: Sequence[float] = SPACING_MM
) -> np.ndarray:
    """Bool (D, H, W) sphere of equivalent diameter `diameter_mm` at `center_zyx` (voxel units);
    :func:`~lefusion.masks.control_region.control_region` without a form."""
    return control_region(shape, center_zyx, diameter_mm, spacing)


def mask_sphere(mask: np.ndarray, spacing: Sequence[float] = SPACING_MM) -> np.ndarray:
    """The control sphere of a training mask (D, H, W): same voxel count, centred at its centroid.
    Empty mask -> empty sphere."""
    return mask_control(mask, "sphere", spacing)


def model_control(model: DiffusionModel) -> ControlKind:
    """The control region a DiffMask was trained with: "sphere" (also the published diffmask.pt) or "ellipsoid"."""
    return model.extra.get("diffmask", {}).get("control", "sphere")


def model_attributes(model: DiffusionModel) -> tuple[str, ...]:
    """The ratings a DiffMask is conditioned on (extra['diffmask']['attributes']); () for none."""
    return tuple(model.extra.get("diffmask", {}).get("attributes") or ())


Attributes = dict[str, float | None]


def attribute_conditions(
    model: DiffusionModel, attributes: Attributes | Sequence[Attributes] | None, n: int, guidance: float = 1.0
) -> np.ndarray | None:
    """Encoded conditions (n, 2K) float32 for one request {name: rating} (all samples) or one per
    sample, or None for a model without attributes. Raises LeFusionError, naming the model, for a
    rating outside 1..5, an attribute the model does not know, any rating or a guidance scale
    other than 1 asked of a model trained without attributes."""
    names = model_attributes(model)
    requests = list(attributes) if isinstance(attributes, Sequence) else [attributes] * n
    if len(requests) != n:
        raise LeFusionError(f"attributes: got {len(requests)} requests for n={n} samples")
    label = str(model.source)
    checked = [check_attributes(r, names, label) for r in requests]
    if not names:
        if float(guidance) != 1.0:
            raise LeFusionError(f"{label}: guidance needs a DiffMask trained with attribute conditioning; this one has none")
        return None
    if not np.isfinite(guidance) or guidance < 0:
        raise LeFusionError(f"guidance must be a number >= 0, got {guidance}")
    rows = np.stack([ratings_row(r, names) for r in checked]) if n else np.zeros((0, len(names)))
    return encode_ratings(rows, names)


def control_regions(
    model: DiffusionModel,
    shape: Sequence[int],
    centres: Sequence[Sequence[float]],
    diameters: Sequence[float],
    seed: int = 0,
) -> np.ndarray:
    """Control regions (n, D, H, W) bool for n requested (centre, equivalent diameter) pairs.

    Spheres for a sphere model. For an ellipsoid model, request i takes the form of a training
    lesion drawn by numpy generator `seed + i` from the checkpoint's ``control_forms``, so the
    lesions' proportions and orientations follow the training set's.
    """
    shape = tuple(int(v) for v in shape)
    spacing = tuple(model.extra.get("diffmask", {}).get("spacing_mm", SPACING_MM))
    forms: list = [None] * len(centres)
    if model_control(model) == "ellipsoid":
        table = model.extra["diffmask"].get("control_forms") or []
        if not table:
            raise LeFusionError("this ellipsoid-controlled DiffMask has no control_forms in its checkpoint")
        forms = [unpack_form(table[int(np.random.default_rng(seed + i).integers(len(table)))]) for i in range(len(centres))]
    if not len(centres):
        return np.zeros((0, *shape), dtype=bool)
    return np.stack([control_region(shape, c, float(d), spacing, f) for c, d, f in zip(centres, diameters, forms)])


def postprocess(
    x0: np.ndarray,
    smoothing_sigma: float = DEFAULT_SMOOTHING_SIGMA,
    threshold: Threshold = 0.0,
    boundary: np.ndarray | None = None,
    sphere: np.ndarray | None = None,
) -> np.ndarray:
    """Generated x0 (D, H, W) in [-1, 1] -> bool mask.

    Gaussian smoothing (sigma in voxels; 0 disables) removes single-voxel speckle, then values
    > `threshold` are foreground (0 = midway between background -1 and lesion +1), clipped to
    `boundary`. Of the 26-connected components, those overlapping `sphere` are kept (the lesion
    the user asked for); when none does (or no sphere is given) the largest is kept. The result
    is clipped to `boundary` once more, so it lies 100 % inside it.

    threshold="size" (needs `sphere`) chooses the threshold per sample instead: the level at
    which the kept lesion's voxel count is nearest the sphere's (inside `boundary`, when given),
    so the equivalent diameter is the requested one whatever the network's calibration. The
    network still draws the shape: the result is one of its output's level sets.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim != 3:
        raise LeFusionError(f"postprocess needs a 3D volume, got shape {x0.shape}")
    for name, m in (("boundary", boundary), ("sphere", sphere)):
        if m is not None and np.shape(m) != x0.shape:
            raise LeFusionError(f"{name} has shape {np.shape(m)}, expected {x0.shape}")
    inside = None if boundary is None else np.asarray(boundary, dtype=bool)
    sphere = None if sphere is None else np.asarray(sphere, dtype=bool)
    smooth = ndimage.gaussian_filter(x0, smoothing_sigma, mode="nearest") if smoothing_sigma > 0 else x0
    if isinstance(threshold, str):
        if threshold != "size":
            raise LeFusionError(f"threshold must be a number or 'size', got {threshold!r}")
        if sphere is None:
            raise LeFusionError("threshold='size' needs the control sphere")
        target = int((sphere & inside).sum() if inside is not None else sphere.sum())
        return _size_matched(smooth, target, inside, sphere)
    return _kept_lesion(smooth > threshold, inside, sphere)


def _kept_lesion(fg: np.ndarray, inside: np.ndarray | None, sphere: np.ndarray | None) -> np.ndarray:
    """Foreground (D, H, W) bool -> the components overlapping `sphere` (else the largest), inside."""
    if inside is not None:
        fg = fg & inside
    labels, n = ndimage.label(fg, structure=_CONNECTIVITY)
    if n == 0:
        return fg
    keep = np.unique(labels[sphere & fg]) if sphere is not None else np.array([], int)
    keep = keep[keep > 0]
    if keep.size == 0:
        keep = np.array([np.argmax(np.bincount(labels.ravel())[1:]) + 1])
    return np.isin(labels, keep)


def _size_matched(smooth: np.ndarray, target: int, inside: np.ndarray | None, sphere: np.ndarray) -> np.ndarray:
    """The kept lesion at the threshold whose voxel count is nearest `target`.

    Candidate levels are the values of `smooth` (inside the boundary) in descending order; taking
    the top i voxels as foreground, the kept count grows with i (components only grow and merge
    as the level falls), so a bisection over i finds the first level reaching `target`; that
    level and the one before it are compared.
    """
    if target <= 0:
        return np.zeros(smooth.shape, dtype=bool)
    levels = np.sort(smooth[inside] if inside is not None else smooth.ravel())[::-1]
    kept = lambda i: _kept_lesion(smooth >= levels[i], inside, sphere)  # noqa: E731
    lo, hi = 0, len(levels) - 1
    if kept(hi).sum() < target:
        return kept(hi)
    while lo < hi:  # first i whose kept count reaches target
        mid = (lo + hi) // 2
        if kept(mid).sum() >= target:
            hi = mid
        else:
            lo = mid + 1
    best = kept(lo)
    if lo > 0:
        below = kept(lo - 1)
        if target - below.sum() < best.sum() - target:
            best = below
    return best


def load_diffmask(path: str | Path, weights: Literal["ema", "model"] = "ema", device: str | torch.device = "cpu") -> DiffusionModel:
    """Load a DiffMask checkpoint (lefusion folder or the published diffmask.pt) via
    :func:`~lefusion.checkpoints.loading.load_model`; raises LeFusionError if it is another kind of model."""
    model = load_model(path, weights=weights, device=device)
    if model.kind != "diffmask":
        raise LeFusionError(f"{path}: is a {model.kind} model, not a DiffMask model; use `lefusion generate`")
    return model


def model_box(model: DiffusionModel) -> tuple[int, int, int]:
    """(D, H, W) box the model was trained on (extra['diffmask']['box'], else the ROI shape)."""
    box = model.extra.get("diffmask", {}).get("box") or model.config.preprocess.roi_shape
    return tuple(int(v) for v in box)


def _per_sample(value, n: int, name: str) -> list:
    """A scalar / single item broadcast to n, or a length-n sequence."""
    if value is None or np.ndim(value) == (0 if name == "diameter_mm" else 1):
        return [value] * n
    if len(value) != n:
        raise LeFusionError(f"{name}: got {len(value)} values for n={n} samples")
    return list(value)


def boundary_region(boundary: torch.Tensor, shape: Sequence[int], mode: BoundaryMode = "noised") -> KnownRegion:
    """Outside the boundary (bool (D, H, W), True inside) is known background x0 = -1: shown at
    the current noise level ("noised", RePaint's rule, keeps the network's input in distribution)
    or as -1 itself ("hard"). The step's own noise serves the background voxels (they are disjoint
    from the generated ones), so the boundary costs no extra draws."""
    values = torch.full(tuple(shape), -1.0, device=boundary.device)
    return KnownRegion(values, boundary, noised=mode == "noised", noise="shared")


@torch.no_grad()
def sample_x0(
    model: DiffusionModel,
    spheres: np.ndarray,
    boundary: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 8,
    boundary_mode: BoundaryMode = "noised",
    progress: Callable[[int, int], None] | None = None,
    sampler: SamplerConfig = Ancestral(),
    cond: np.ndarray | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Raw samples (n, D, H, W) float32 in [-1, 1] (CPU) for control regions (n, D, H, W) bool.

    cond: (n, cond_dim) encoded attribute conditions (:func:`attribute_conditions`) for a model
    with attributes (None there: the null condition, zeros, nothing asked), None otherwise; guidance: the
    classifier-free guidance scale (:class:`~lefusion.diffusion.guidance.Guided`; 1 = plain
    conditional, costs one network evaluation per step, any other value two).

    Sample i draws x_T and every step's noise from its own torch.Generator seeded `seed + i`, so
    it does not depend on `batch_size` or on the other samples (up to the float rounding of
    batched kernels, ~1e-5). The network sees concat(x_t, region*2-1) and predicts eps, x0 or v
    (`config.prediction`); `sampler` runs the reverse process (default ancestral DDPM over all T
    steps, Ho et al. 2020, Alg. 2 with x0 clipped to [-1, 1]); with a boundary, the voxels
    outside it are known background (:func:`boundary_region`). progress(done, total) is called
    after every move (total = n_batches * moves per batch).
    """
    if model.kind != "diffmask":
        raise LeFusionError(f"sample_x0 needs a DiffMask model, got a {model.kind} model")
    spheres = np.asarray(spheres, dtype=bool)
    n, shape = spheres.shape[0], tuple(spheres.shape[1:])
    device, schedule = model.device, model.schedule
    inside = None
    if boundary is not None:
        if np.shape(boundary) != shape:
            raise LeFusionError(f"boundary has shape {np.shape(boundary)}, expected the box {shape}")
        inside = torch.from_numpy(np.asarray(boundary, dtype=bool)).to(device)
    cond_dim = model.config.denoiser.cond_dim
    if cond is not None and not cond_dim:
        raise LeFusionError(f"{model.source}: this DiffMask has no attribute conditioning; sample it without cond")
    if cond is None and cond_dim:  # a model with attributes, asked none: the null condition
        cond = np.zeros((n, cond_dim), dtype=np.float32)
    denoiser = model.denoiser if cond is None else Guided(model.denoiser, torch.zeros(cond_dim, device=device), guidance)
    moves = len(sampler.plan(schedule.num_timesteps))
    total, out = -(-n // batch_size) * moves, []
    for lo in range(0, n, batch_size):
        idx = range(lo, min(lo + batch_size, n))
        noise = Noise([torch.Generator().manual_seed(seed + i) for i in idx], device)
        region = torch.from_numpy(spheres[lo : lo + len(idx), None]).to(device, torch.float32) * 2 - 1
        batch_cond = None if cond is None else torch.from_numpy(np.asarray(cond[lo : lo + len(idx)], np.float32)).to(device)
        network = Network(denoiser, batch_cond, region, model.config.prediction)
        batch_shape = (len(idx), 1, *shape)
        known = None if inside is None else boundary_region(inside, batch_shape, boundary_mode)
        done = (lo // batch_size) * moves
        tick = None if progress is None else (lambda d, _t, done=done: progress(done + d, total))
        x = sampler.sample(network, schedule, batch_shape, noise, known, tick)
        out.append(x[:, 0].float().cpu())
    return torch.cat(out) if out else torch.zeros((0, *shape))


def sample_masks(
    model: DiffusionModel,
    n: int,
    diameter_mm: float | Sequence[float],
    center_zyx: Sequence[float] | Sequence[Sequence[float]] | None = None,
    boundary: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    smoothing_sigma: float = DEFAULT_SMOOTHING_SIGMA,
    threshold: Threshold = "size",
    boundary_mode: BoundaryMode = "noised",
    shape: Sequence[int] | None = None,
    sampler: SamplerConfig = Ancestral(),
    attributes: Attributes | Sequence[Attributes] | None = None,
    guidance: float = 1.0,
) -> list[np.ndarray]:
    """Generate `n` lesion masks, each a bool (D, H, W) array in the model's box (or `shape`).

    diameter_mm: requested equivalent diameter(s) in mm, one for all or one per sample;
    center_zyx: requested centroid(s) (z, y, x) in voxels, default the box centre ((D-1)/2, ...);
    boundary: optional bool (D, H, W) region (e.g. lung) every sample stays 100 % inside;
    seed: sample i uses generator seed + i (same seed, same masks, whatever `batch_size`);
    progress(done, total): called after each network evaluation; attributes: radiologist ratings
    1..5 for a model conditioned on them, e.g. {"spiculation": 4, "lobulation": 3}, one request for
    all samples or one per sample (attributes not named are left to the model); guidance: the
    classifier-free guidance scale. See :func:`sample_x0` and :func:`postprocess` for the steps and
    their parameters.
    """
    if n < 0:
        raise LeFusionError(f"n must be >= 0, got {n}")
    shape = tuple(int(v) for v in shape) if shape is not None else model_box(model)
    diameters = _per_sample(diameter_mm, n, "diameter_mm")
    centres = _per_sample(center_zyx, n, "center_zyx")
    centres = [tuple((s - 1) / 2.0 for s in shape) if c is None else c for c in centres]
    cond = attribute_conditions(model, attributes, n, guidance)
    spheres = control_regions(model, shape, centres, diameters, seed)
    x0 = sample_x0(model, spheres, boundary, seed, batch_size, boundary_mode, progress, sampler, cond, guidance).numpy()
    return [postprocess(x, smoothing_sigma, threshold, boundary, s) for x, s in zip(x0, spheres)]
