"""Lesion-DDPM end to end on the ellipsoid brain stand-in: training (loss falls, checkpoint round
trip, resume), `generate --method lesion-ddpm` (geometry, copied labels, no dependence on the
image, determinism, resume, shards, few-step samplers) and its errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lefusion.checkpoints import load_model, read_checkpoint, save_checkpoint
from lefusion.cli import main
from lefusion.config import DenoiserConfig, ModelConfig, ScheduleConfig, VolumeConfig
from lefusion.errors import LeFusionError
from lefusion.generation import GenerateConfig, generate_volumes
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.models import Denoiser
from lefusion.training import TrainConfig, train_lesion_ddpm

from .brain_standin import STANDIN_SHAPE, write_standin

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = (16, 16, 16)
NET = DenoiserConfig(dim=8, dim_mults=(1, 2), channels=1, cond_dim=None, attn_heads=2, attn_dim_head=8, resnet_groups=4)
SCHEDULE = ScheduleConfig(timesteps=20)


def _train(data: Path, run: Path, steps: int, volume: VolumeConfig | None = None, save_every: int = 100) -> Path:
    config = TrainConfig(
        steps=steps, batch_size=2, grad_accum=1, lr=1e-3, method="lesion-ddpm", save_every=save_every, device="cpu", ema_every=1
    )
    return train_lesion_ddpm(data, run, config, volume or VolumeConfig(volume_shape=GRID), NET, SCHEDULE, progress=False)


@pytest.fixture(scope="module")
def brains(tmp_path_factory) -> Path:
    return write_standin(tmp_path_factory.mktemp("brains") / "data", 4, seed=0)


@pytest.fixture(scope="module")
def trained(brains, tmp_path_factory) -> Path:
    return _train(brains, tmp_path_factory.mktemp("run") / "run", 40)


def _losses(run: Path) -> list[float]:
    with open(run / "log.csv", newline="") as handle:
        return [float(r["loss"]) for r in csv.DictReader(handle)]


def test_training_loss_falls_and_checkpoint_round_trips(trained: Path) -> None:
    losses = _losses(trained.parent)
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses
    model = load_model(trained)
    assert model.kind == "lesion-ddpm" and model.config.volume.volume_shape == GRID
    lo, hi = model.config.volume.reference
    assert 100 < lo < 200 and 500 < hi < 900  # the stand-in's CSF ... lesion intensities
    config, weights, extra = read_checkpoint(trained)
    assert config == model.config and "lesion_ddpm" in extra
    state = torch.load(trained.parent / "train_state.pt", weights_only=True)
    for key, value in model.denoiser.state_dict().items():
        torch.testing.assert_close(value, state["ema"][key])


def test_resume_repeats_the_uninterrupted_run(brains: Path, tmp_path: Path) -> None:
    whole = load_model(_train(brains, tmp_path / "whole", 6))
    _train(brains, tmp_path / "parts", 3, save_every=3)
    resumed = load_model(_train(brains, tmp_path / "parts", 6, save_every=3))
    for key, value in whole.denoiser.state_dict().items():
        torch.testing.assert_close(value, resumed.denoiser.state_dict()[key])
    with pytest.raises(LeFusionError, match="other settings"):
        _train(brains, tmp_path / "parts", 6, VolumeConfig(volume_shape=GRID, lesion_weight=2.0))


def _generate(model_dir: Path, data: Path, out: Path, seed: int = 0, **kw) -> dict:
    generate_volumes(load_model(model_dir), data, out, GenerateConfig(seed=seed, batch_size=kw.pop("batch_size", 2), **kw), progress=False)
    return json.loads((out / "manifest.json").read_text())


def test_generate_writes_whole_volumes_on_each_case_geometry(trained: Path, brains: Path, tmp_path: Path) -> None:
    manifest = _generate(trained, brains, tmp_path / "out")
    assert sorted(manifest["outputs"]) == [f"brain_{i:03d}_lesion-ddpm" for i in range(4)]
    volume = load_model(trained).config.volume
    for output, entry in manifest["outputs"].items():
        name = output.removesuffix("_lesion-ddpm")
        mask_in = read_volume(brains / "masks" / f"{name}.nii.gz")
        organs_in = read_volume(brains / "organs" / f"{name}.nii.gz")
        image = read_volume(tmp_path / "out" / entry["image"])
        assert image.array.dtype == np.float32 and image.shape == STANDIN_SHAPE
        assert image.geometry.matches(mask_in.geometry)
        np.testing.assert_array_equal(read_volume(tmp_path / "out" / entry["mask"]).array, mask_in.array)
        np.testing.assert_array_equal(read_volume(tmp_path / "out" / entry["organs"]).array, organs_in.array)
        outside = organs_in.array == 0
        assert (image.array[outside] == volume.background).all()
        assert np.isfinite(image.array).all() and image.array[~outside].std() > 0
        assert entry["method"] == "lesion-ddpm" and entry["network_evaluations"] == 20
    # the output is a plain layout the segmentation tools read
    from lefusion.data.layouts import find_cases

    assert [c.name for c in find_cases(tmp_path / "out")] == sorted(manifest["outputs"])


def test_output_does_not_depend_on_the_image_and_is_deterministic(trained: Path, brains: Path, tmp_path: Path) -> None:
    first = _generate(trained, brains, tmp_path / "a")
    changed = tmp_path / "changed"
    shutil.copytree(brains, changed)
    for path in (changed / "images").iterdir():
        vol = read_volume(path)
        write_volume(Volume(np.random.default_rng(5).normal(300, 200, vol.shape).astype(np.float32), vol.geometry), path)
    _generate(trained, changed, tmp_path / "b")
    without = tmp_path / "noimages"
    shutil.copytree(brains, without, ignore=shutil.ignore_patterns("images"))
    _generate(trained, without, tmp_path / "c")
    _generate(trained, brains, tmp_path / "d", seed=1)
    for name, entry in first["outputs"].items():
        a = read_volume(tmp_path / "a" / entry["image"]).array
        np.testing.assert_array_equal(a, read_volume(tmp_path / "b" / entry["image"]).array)
        np.testing.assert_array_equal(a, read_volume(tmp_path / "c" / entry["image"]).array)
        assert not np.array_equal(a, read_volume(tmp_path / "d" / entry["image"]).array), name
    # same seed again: identical; the mask is the condition: changing it changes the output
    again = tmp_path / "again"
    _generate(trained, brains, again)
    for entry in first["outputs"].values():
        np.testing.assert_array_equal(read_volume(tmp_path / "a" / entry["image"]).array, read_volume(again / entry["image"]).array)


def test_changing_the_mask_changes_the_output(trained: Path, brains: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(brains, moved)
    path = moved / "masks" / "brain_000.nii.gz"
    vol = read_volume(path)
    organs = read_volume(moved / "organs" / "brain_000.nii.gz").array
    vol.array[:] = 0
    vol.array[(organs == 3) & (np.indices(organs.shape)[0] < organs.shape[0] // 2)] = 1  # a large lesion
    write_volume(vol, path)
    a, b = _generate(trained, brains, tmp_path / "a", max_cases=1), _generate(trained, moved, tmp_path / "b", max_cases=1)
    image = a["outputs"]["brain_000_lesion-ddpm"]["image"]
    assert image == b["outputs"]["brain_000_lesion-ddpm"]["image"]
    assert not np.array_equal(read_volume(tmp_path / "a" / image).array, read_volume(tmp_path / "b" / image).array)


def test_resume_shards_and_few_step_sampler(trained: Path, brains: Path, tmp_path: Path, capsys) -> None:
    whole = _generate(trained, brains, tmp_path / "whole", batch_size=1)
    stamp = (tmp_path / "whole" / "images" / "brain_000_lesion-ddpm.nii.gz").stat().st_mtime_ns
    generate_volumes(load_model(trained), brains, tmp_path / "whole", GenerateConfig(seed=0, batch_size=1))
    assert "4 already done" in capsys.readouterr().out
    assert (tmp_path / "whole" / "images" / "brain_000_lesion-ddpm.nii.gz").stat().st_mtime_ns == stamp
    with pytest.raises(LeFusionError, match="other settings"):
        _generate(trained, brains, tmp_path / "whole", seed=3)
    args = ["generate", "--method", "lesion-ddpm", "--checkpoint", str(trained), "--data", str(brains), "--batch-size", "1"]
    for k in (0, 1):
        assert main([*args, "--out", str(tmp_path / "sharded"), "--shard", f"{k}/2"]) == 0
    for entry in whole["outputs"].values():
        np.testing.assert_array_equal(
            read_volume(tmp_path / "whole" / entry["image"]).array, read_volume(tmp_path / "sharded" / entry["image"]).array
        )
    assert main([*args, "--out", str(tmp_path / "ddim"), "--sampler", "ddim", "--steps", "5"]) == 0
    ddim = json.loads((tmp_path / "ddim" / "manifest.json").read_text())
    assert ddim["settings"]["sampler"]["kind"] == "ddim" and ddim["outputs"]["brain_000_lesion-ddpm"]["network_evaluations"] == 5


def test_cli_train_and_generate_without_organs(tmp_path: Path) -> None:
    """A dataset without organs/: the condition is the brain mask (image > 0) + the lesion."""
    data = write_standin(tmp_path / "data", 2, seed=3, organs=False)
    common = ["--dim", "8", "--dim-mults", "1", "2", "--heads", "2", "--dim-head", "8", "--timesteps", "10"]
    run = tmp_path / "run"
    argv = ["train", "--method", "lesion-ddpm", "--data", str(data), "--out", str(run), "--volume-shape", "8", "8", "8"]
    assert main([*argv, "--anatomy-labels", "--steps", "2", "--batch-size", "1", "--device", "cpu", *common]) == 0
    model = load_model(run / "checkpoint")
    assert model.config.volume.anatomy_labels == () and model.config.denoiser.extra_in_channels == 2
    assert (
        main(
            [
                "generate",
                "--method",
                "lesion-ddpm",
                "--checkpoint",
                str(run / "checkpoint"),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["images", "manifest.json", "masks"]


def _lefusion_checkpoint(path: Path) -> Path:
    den = DenoiserConfig(dim=8, dim_mults=(1, 2), cond_dim=16, attn_heads=2, attn_dim_head=8, resnet_groups=4)
    config = ModelConfig(denoiser=den)
    return save_checkpoint(path, config, Denoiser(den).state_dict())


def _cli_fails(argv: list[str], match: str, capsys) -> None:
    """The command exits non-zero with a one-line error matching `match`."""
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_clear_errors(trained: Path, brains: Path, tmp_path: Path, capsys) -> None:
    lefusion_ck = _lefusion_checkpoint(tmp_path / "lefusion_ck")
    _cli_fails(
        ["generate", "--method", "lesion-ddpm", "--checkpoint", str(lefusion_ck), "--data", str(brains), "--out", str(tmp_path / "o1")],
        "is a lefusion model; --method lesion-ddpm needs",
        capsys,
    )
    _cli_fails(
        ["generate", "--method", "lefusion", "--checkpoint", str(trained), "--data", str(brains), "--out", str(tmp_path / "o2")],
        "is a lesion-ddpm model",
        capsys,
    )
    _cli_fails(
        [
            "generate",
            "--method",
            "lesion-ddpm",
            "--checkpoint",
            str(trained),
            "--data",
            str(brains),
            "--out",
            str(tmp_path / "o3"),
            "--preset",
            "1",
        ],
        "do.es. not apply",
        capsys,
    )
    # a case without a mask
    nomask = tmp_path / "nomask"
    shutil.copytree(brains, nomask)
    (nomask / "masks" / "brain_002.nii.gz").unlink()
    with pytest.raises(LeFusionError, match=r"brain_002.nii.gz: case without a lesion mask"):
        _generate(trained, nomask, tmp_path / "o4")
    assert not (tmp_path / "o4").exists()  # validated before anything is written
    # mask and organs on different grids
    for change, what in (({"spacing": (2.0, 2.0, 3.0)}, "geometry"), (None, "shape")):
        bad = tmp_path / f"bad_{what}"
        shutil.copytree(brains, bad)
        organs = bad / "organs" / "brain_001.nii.gz"
        vol = read_volume(organs)
        if change:
            write_volume(Volume(vol.array, Geometry(**{**vol.geometry.__dict__, **change})), organs)
        else:
            write_volume(Volume(vol.array[:-1], vol.geometry), organs)
        with pytest.raises(LeFusionError, match=rf"organs/brain_001.nii.gz: {what}"):
            _generate(trained, bad, tmp_path / f"o_{what}")
        with pytest.raises(LeFusionError, match=rf"organs/brain_001.nii.gz: {what}"):
            _train(bad, tmp_path / f"r_{what}", 1)
    # training without --volume-shape; a ROI flag on a lesion-ddpm run
    argv = ["train", "--method", "lesion-ddpm", "--data", str(brains), "--out", str(tmp_path / "r")]
    _cli_fails(argv, "--volume-shape", capsys)
    _cli_fails([*argv, "--volume-shape", "8", "8", "8", "--roi-shape", "8", "8", "8"], "--roi-shape does not apply", capsys)
    _cli_fails(["train", "--data", str(brains), "--out", str(tmp_path / "r2"), "--lesion-weight", "3"], "--lesion-weight belong", capsys)


@pytest.mark.slow  # 14 s, most of it writing the phantom (template load + deformation)
def test_on_the_brain_phantom_contract(tmp_path: Path) -> None:
    """The real brain phantom (branch `brain`) at 4 mm: held-out test.txt cases are not trained on,
    lesion-free cases (empty masks) are, and every case is generated on its own grid."""
    pytest.importorskip("nilearn")
    from lefusion.phantoms.brain import write_brain_phantom

    data = tmp_path / "brain"
    summary = write_brain_phantom(data, n_normal=1, n_pathological=2, n_test=1, seed=0, spacing=(4.0, 4.0, 4.0))
    checkpoint = _train(data, tmp_path / "run", 2, VolumeConfig(volume_shape=(8, 8, 8)))
    record = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert record["n_cases"] == 2  # 1 normal + 1 pathological; the test case is held out
    manifest = _generate(checkpoint, data, tmp_path / "out", batch_size=3)
    assert sorted(manifest["outputs"]) == sorted(f"{n}_lesion-ddpm" for n in summary["normal"] + summary["pathological"])
    for output, entry in manifest["outputs"].items():
        name = output.removesuffix("_lesion-ddpm")
        source = read_volume(data / "organs" / f"{name}.nii.gz")
        out = read_volume(tmp_path / "out" / entry["image"])
        assert out.shape == source.shape and out.geometry.matches(source.geometry)
