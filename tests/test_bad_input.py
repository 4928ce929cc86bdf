"""Every bad input named in the issue: exit code 2, one line naming the file and the problem,
and nothing written to the output folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lefusion.checkpoints import save_model
from lefusion.cli import main
from lefusion.config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig
from lefusion.diffusion.model import DiffusionModel
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.models import Denoiser
from lefusion.phantoms import write_lung_phantom

ROI = (8, 16, 16)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "lung"
    write_lung_phantom(root, n_pathological=2, n_normal=2, n_test=1, seed=0, roi_shape=ROI, spacing=(2.0, 2.0, 2.0))
    return root


def _model(tmp: Path, channels: int = 1, labels: tuple[int, ...] = (1,)) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(
        denoiser=DenoiserConfig(dim=8, dim_mults=(1, 2), channels=channels, cond_dim=16 * channels, attn_heads=2, attn_dim_head=8),
        schedule=ScheduleConfig(timesteps=4),
        preprocess=PreprocessConfig(roi_shape=ROI),
        lesion_labels=labels,
        hist_presets=(tuple([1 / 16] * 16 * channels),),
    )
    return save_model(DiffusionModel(cfg, Denoiser(cfg.denoiser)), tmp / f"model_{channels}")


def _case(root: Path) -> tuple[Path, Path]:
    image = sorted((root / "Normal" / "Image").glob("*.nii.gz"))[0]
    mask = root / "Normal" / "Mask" / image.name.replace("Vol_", "Mask_")
    return image, mask


def _run_generate(root: Path, model: Path, out: Path, capsys) -> str:
    code = main(
        [
            "generate",
            "--checkpoint",
            str(model),
            "--data",
            str(root),
            "--out",
            str(out),
            "--preset",
            "1",
            "--jump-length",
            "1",
            "--jump-n-sample",
            "1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("lefusion: error:") and "\n" not in err
    assert not out.exists() or not any(out.rglob("*.nii.gz")), "nothing may be written on bad input"
    return err


def _mutate(clean: Path, tmp: Path, edit) -> tuple[Path, Path, Path]:
    root = tmp / "data"
    shutil.copytree(clean, root)
    image, mask = _case(root)
    edit(image, mask)
    return root, image, mask


def _rewrite(path: Path, fn) -> None:
    vol = read_volume(path, check_finite=False)
    out = fn(vol)
    write_volume(out if isinstance(out, Volume) else Volume(out, vol.geometry), path)


BAD_INPUTS = {
    "not 3D": (lambda i, m: _write_2d(i), r"is 2D|expected a 3D", "image"),
    "shape mismatch": (lambda i, m: _rewrite(m, lambda v: v.array[:, :-2]), r"shape", "mask"),
    "geometry mismatch": (
        lambda i, m: _rewrite(m, lambda v: Volume(v.array, Geometry(spacing=(9.0, 9.0, 9.0)))),
        r"geometry|spacing",
        "mask",
    ),
    "empty mask": (lambda i, m: _rewrite(m, lambda v: np.zeros_like(v.array)), r"empty|no lesion", "mask"),
    "unknown label": (lambda i, m: _rewrite(m, lambda v: np.where(v.array > 0, 7, 0).astype(np.uint8)), r"7", "mask"),
    "NaN voxels": (lambda i, m: _rewrite(i, lambda v: _with_nan(v.array)), r"NaN", "image"),
    "corrupt file": (lambda i, m: i.write_bytes(b"not a nifti at all"), r"unreadable|corrupt", "image"),
}


def _write_2d(path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(path))


def _with_nan(array: np.ndarray) -> np.ndarray:
    out = array.astype(np.float32)
    out[0, 0, 0] = np.nan
    return out


@pytest.mark.parametrize("problem", list(BAD_INPUTS))
def test_bad_case_is_refused_naming_the_file(problem, clean, tmp_path, capsys):
    edit, pattern, which = BAD_INPUTS[problem]
    root, image, mask = _mutate(clean, tmp_path, edit)
    err = _run_generate(root, _model(tmp_path), tmp_path / "out", capsys)
    import re

    assert re.search(pattern, err, re.IGNORECASE), err
    assert (image.name if which == "image" else mask.name) in err, err


def test_folder_without_cases(tmp_path, capsys):
    (tmp_path / "empty" / "Normal" / "Image").mkdir(parents=True)
    (tmp_path / "empty" / "Normal" / "Mask").mkdir(parents=True)
    err = _run_generate(tmp_path / "empty", _model(tmp_path), tmp_path / "out", capsys)
    assert "empty" in err


def test_checkpoint_channels_do_not_match_the_data(clean, tmp_path, capsys):
    model = _model(tmp_path, channels=2, labels=(3, 4))  # an EMIDEC-style model on lung data
    err = _run_generate(clean, model, tmp_path / "out", capsys)
    assert "(3, 4)" in err or "3, 4" in err, err


def test_train_on_folder_without_pathological_cases(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and not (tmp_path / "run" / "train_state.pt").exists()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_nan_is_caught_in_every_format(tmp_path, suffix):
    from lefusion.errors import LeFusionError

    array = np.zeros((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    path = write_volume(array, tmp_path / f"scan{suffix}")
    with pytest.raises(LeFusionError, match=r"scan.*1 NaN"):
        read_volume(path)
