"""Reading and writing 3D volumes with their geometry. The only module that imports SimpleITK.

Arrays are numpy in (z, y, x) order (= (D, H, W)); geometry is kept in the same order for
spacing, and in ITK's (x, y, z) physical convention for origin and direction so it can be
written back unchanged. Writes go to a temporary name in the target folder and are renamed when
complete, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LeFusionError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a voxel grid.

    spacing: (z, y, x) voxel size in mm. origin: (x, y, z) in mm, ITK order. direction: 3x3
    row-major direction cosines, ITK order.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def matches(self, other: Geometry, tol: float = 1e-4) -> bool:
        return all(
            np.allclose(a, b, atol=tol)
            for a, b in ((self.spacing, other.spacing), (self.origin, other.origin), (self.direction, other.direction))
        )


@dataclass
class Volume:
    """A 3D array (D, H, W) with its geometry."""

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]


def has_volume_suffix(path: str | Path) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def strip_volume_suffix(name: str) -> str:
    """'case_001.nii.gz' -> 'case_001'."""
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def dicom_series(folder: str | Path) -> list[str]:
    """The DICOM series ids in `folder` (not its subfolders); empty if it holds none."""
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def _read_image(path: Path):
    """A SimpleITK image from a volume file, or from a folder holding one DICOM series."""
    import SimpleITK as sitk

    if path.is_dir():
        series = dicom_series(path)
        if len(series) != 1:
            found = "no DICOM series" if not series else f"{len(series)} DICOM series ({', '.join(series[:3])})"
            raise LeFusionError(f"{path}: a scan folder must hold exactly one DICOM series, found {found}")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def read_volume(path: str | Path, *, check_finite: bool = True) -> Volume:
    """Read a NIfTI / NRRD / MHA volume, or a folder holding one DICOM series (slices sorted by
    position, as SimpleITK's GDCM reader does). Raises LeFusionError naming the file if it is
    missing, unreadable, not 3D (a trailing singleton 4th axis is dropped) or has NaN/Inf voxels."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise LeFusionError(f"{path}: file not found")
    try:
        image = _read_image(path)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "ERROR" in line or "rror" in line), first[0] if first else "")
        raise LeFusionError(f"{path}: unreadable or corrupt volume ({detail.strip()[:200]})") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise LeFusionError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel, expected a scalar volume")
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 4 and array.shape[0] == 1:
        array = array[0]
        image = image[:, :, :, 0]
    if array.ndim != 3:
        raise LeFusionError(f"{path}: is {array.ndim}D with shape {array.shape}, expected a 3D volume")
    if check_finite and np.issubdtype(array.dtype, np.floating):
        bad = int((~np.isfinite(array)).sum()) or _nifti_nonfinite_count(path)
        if bad:
            raise LeFusionError(f"{path}: contains {bad} NaN/Inf voxels")
    sx, sy, sz = image.GetSpacing()
    geometry = Geometry(spacing=(sz, sy, sx), origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection()))
    return Volume(array=array, geometry=geometry)


def _nifti_nonfinite_count(path: Path) -> int:
    """NaN/Inf voxels of a NIfTI file as stored. Needed because ITK's NIfTI reader silently turns
    NaN into 0 (seen with SimpleITK 2.5), which would hide a corrupt image; nibabel does not."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return 0
    import nibabel

    data = np.asanyarray(nibabel.load(str(path)).dataobj)
    return int((~np.isfinite(data)).sum()) if np.issubdtype(data.dtype, np.floating) else 0


def write_volume(volume: Volume | np.ndarray, path: str | Path, geometry: Geometry | None = None) -> Path:
    """Write a (D, H, W) array with geometry atomically (temporary name, then rename). Returns path."""
    import SimpleITK as sitk

    if isinstance(volume, Volume):
        array, geometry = volume.array, geometry or volume.geometry
    else:
        array, geometry = volume, geometry or Geometry()
    array = np.asarray(array)
    if array.ndim != 3:
        raise LeFusionError(f"{path}: refusing to write a {array.ndim}D array, expected (D, H, W)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(array)
    sz, sy, sx = geometry.spacing
    image.SetSpacing((float(sx), float(sy), float(sz)))
    image.SetOrigin(tuple(float(v) for v in geometry.origin))
    image.SetDirection(tuple(float(v) for v in geometry.direction))

    path = Path(path)
    # Keep the real suffix on the temporary name: SimpleITK picks the writer from it.
    suffix = next((s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s)), path.suffix)
    with atomic_target(path, suffix) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp's own is 0600, owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_target(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path` (atomic on one
    file system), on any error it is removed, so `path` is either complete or untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes to `path` via a temporary file in the same folder and an atomic rename."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
