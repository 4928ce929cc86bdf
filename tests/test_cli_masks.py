"""`lefusion masks ...` commands end to end on tiny inputs."""

from __future__ import annotations

from lefusion.cli import main
from lefusion.io import read_volume
from lefusion.masks.shape import shape_descriptors

from .test_masks_lidc import make_db


def test_masks_lidc_from_a_given_sqlite(tmp_path, capsys):
    db = make_db(tmp_path / "tiny.sqlite")
    assert main(["masks", "lidc", "--sqlite", str(db), "--out", str(tmp_path / "out"), "--box", "16", "32", "32", "--workers", "1"]) == 0
    assert "lidc_masks_train.npz" in capsys.readouterr().out
    assert (tmp_path / "out" / "lidc_masks_test.npz").is_file()


def test_handcrafted_then_evaluate(tmp_path, capsys):
    assert (
        main(
            ["masks", "handcrafted", "--n", "3", "--diameter", "8", "--box", "16", "24", "24", "--seed", "1", "--out", str(tmp_path / "hc")]
        )
        == 0
    )
    files = sorted((tmp_path / "hc").glob("*.nii.gz"))
    assert len(files) == 3
    for f in files:
        d = shape_descriptors(read_volume(f).array > 0)["equivalent_diameter_mm"]
        assert abs(d - 8) < 0.8, d
    assert main(["masks", "handcrafted", "--n", "3", "--diameter", "12", "--box", "16", "24", "24", "--out", str(tmp_path / "big")]) == 0
    capsys.readouterr()
    assert main(["masks", "evaluate", "--reference", str(tmp_path / "hc"), str(tmp_path / "hc"), str(tmp_path / "big")]) == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): float(line.split("**")[1]) for line in table.splitlines() if "**" in line}
    assert rows["hc"] == 0.0 and rows["big"] > 1.0


def test_evaluate_names_a_bad_path(tmp_path, capsys):
    assert main(["masks", "evaluate", "--reference", str(tmp_path / "nope.npz"), str(tmp_path)]) == 2
    assert "nope.npz" in capsys.readouterr().err


def test_masks_train_from_an_npz(tmp_path, capsys):
    import numpy as np

    from lefusion.masks.diffmask import control_sphere, load_diffmask

    masks = np.stack([control_sphere((12, 20, 20), (5.5, 9.5, 9.5), d) for d in (3.0, 4.0, 5.0)]).astype(np.uint8)
    np.savez_compressed(tmp_path / "m.npz", masks=masks)
    argv = [
        "masks",
        "train",
        "--masks",
        str(tmp_path / "m.npz"),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--box",
        "8",
        "16",
        "16",
        "--dim",
        "8",
        "--dim-mults",
        "1",
        "2",
        "--heads",
        "2",
        "--dim-head",
        "8",
        "--timesteps",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    model = load_diffmask(tmp_path / "run" / "checkpoint")
    assert model.config.prediction == "x0" and model.extra["train"]["steps"] == 2
    assert model.extra["diffmask"]["control"] == "sphere" and "control_forms" not in model.extra["diffmask"]
    argv[argv.index("--out") + 1] = str(tmp_path / "ellipsoid")
    assert main([*argv, "--control", "ellipsoid"]) == 0
    ellipsoid = load_diffmask(tmp_path / "ellipsoid" / "checkpoint").extra["diffmask"]
    assert ellipsoid["control"] == "ellipsoid" and len(ellipsoid["control_forms"]) == 3
    assert main(["masks", "train", "--masks", str(tmp_path / "none.npz"), "--out", str(tmp_path / "r2")]) == 2
    assert "none.npz" in capsys.readouterr().err
