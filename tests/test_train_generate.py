"""End to end on a tiny phantom: train, kill and resume, generate, background exactness on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lefusion
from lefusion.cli import main
from lefusion.config import DenoiserConfig, PreprocessConfig, ScheduleConfig
from lefusion.diffusion.sampling import Ancestral, TimeTravel
from lefusion.generation import GenerateConfig, generate_dataset
from lefusion.io import read_volume
from lefusion.phantoms import write_lung_phantom
from lefusion.training import TrainConfig
from lefusion.training.run import train_on_folder
from lefusion.training.state import load_state

ROI = (8, 16, 16)
TINY = DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
SCHEDULE = ScheduleConfig(timesteps=8)
FAST = GenerateConfig(presets=("1", "3"), sampler=TimeTravel(2, 2), batch_size=2, previews=True)


@pytest.fixture(scope="module")
def lung(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "lung"
    write_lung_phantom(root, n_pathological=6, n_normal=2, n_test=1, seed=0, roi_shape=ROI, spacing=(2.0, 2.0, 2.0))
    return root


def _train(lung: Path, run: Path, steps: int, **overrides) -> Path:
    cfg = TrainConfig(steps=steps, batch_size=2, grad_accum=2, save_every=2, seed=7, **overrides)
    return train_on_folder(lung, run, cfg, TINY, SCHEDULE, preprocess=PreprocessConfig(roi_shape=ROI), progress=False)


@pytest.fixture(scope="module")
def checkpoint(lung, tmp_path_factory) -> Path:
    return _train(lung, tmp_path_factory.mktemp("run"), steps=2)


def test_training_writes_checkpoint_log_and_presets(checkpoint):
    model = lefusion.load(checkpoint)
    assert len(model.config.hist_presets) == 3
    means = [np.dot(p, np.linspace(-15 / 16, 15 / 16, 16)) for p in model.config.hist_presets]
    assert means == sorted(means), "presets are ordered faint -> dense"
    log = (checkpoint.parent / "log.csv").read_text().splitlines()
    assert log[0] == "step,loss,seconds" and len(log) == 3
    assert all(np.isfinite(float(row.split(",")[1])) for row in log[1:])


def test_kill_and_resume_gives_the_uninterrupted_weights(lung, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    _train(lung, straight, steps=4)
    reference = load_state(straight)

    resumed = tmp_path / "resumed"
    calls = {"n": 0}
    original_step = torch.optim.Adam.step

    def dying_step(self, *args, **kwargs):  # the process dies during the 3rd optimiser step
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _train(lung, resumed, steps=4)
    monkeypatch.setattr(torch.optim.Adam, "step", original_step)
    assert load_state(resumed)["step"] == 2
    _train(lung, resumed, steps=4)
    state = load_state(resumed)
    for key in ("model", "ema"):
        for name, value in reference[key].items():
            assert torch.equal(state[key][name], value), f"{key}.{name} differs after resume"
    assert len((resumed / "log.csv").read_text().splitlines()) == 5  # header + 4 steps, no duplicates


def test_resume_with_other_settings_is_refused(lung, checkpoint):
    with pytest.raises(lefusion.LeFusionError, match="other settings"):
        _train(lung, checkpoint.parent, steps=4, lr=1e-3)


def test_generation_keeps_background_in_source_units_and_is_deterministic(lung, checkpoint, tmp_path):
    model = lefusion.load(checkpoint)
    manifest_path = generate_dataset(model, lung, tmp_path / "a", FAST, progress=False)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["model"]["sha256"] == model.weights_sha256
    outputs = manifest["outputs"]
    assert len(outputs) == 2 * 2  # 2 normal cases x 2 presets
    for entry in outputs.values():
        source, mask = read_volume(entry["source_image"]), read_volume(entry["source_mask"])
        generated = read_volume(tmp_path / "a" / entry["image"])
        label = read_volume(tmp_path / "a" / entry["label"])
        assert generated.array.dtype == source.array.dtype
        assert generated.geometry.matches(source.geometry)
        background = mask.array == 0
        assert np.array_equal(generated.array[background], source.array[background])
        assert not np.array_equal(generated.array[~background], source.array[~background])
        assert np.array_equal(label.array, mask.array)
        assert (tmp_path / "a" / entry["preview"]).is_file()
        assert abs(sum(entry["histogram"]) - 1) < 1e-4
    generate_dataset(model, lung, tmp_path / "b", FAST, progress=False)
    for name, entry in outputs.items():
        a = read_volume(tmp_path / "a" / entry["image"]).array
        b = read_volume(tmp_path / "b" / entry["image"]).array
        assert np.array_equal(a, b), f"{name}: same seed, different output"
    other = generate_dataset(model, lung, tmp_path / "c", GenerateConfig(**{**FAST.__dict__, "seed": 1}), progress=False)
    first = next(iter(outputs))
    c = read_volume(tmp_path / "c" / json.loads(other.read_text())["outputs"][first]["image"]).array
    assert not np.array_equal(c, read_volume(tmp_path / "a" / outputs[first]["image"]).array)


def test_batching_does_not_change_outputs_and_resume_skips_finished(lung, checkpoint, tmp_path):
    model = lefusion.load(checkpoint)
    generate_dataset(model, lung, tmp_path / "batched", FAST, progress=False)
    single = GenerateConfig(**{**FAST.__dict__, "batch_size": 1, "max_cases": 1})
    manifest = json.loads(generate_dataset(model, lung, tmp_path / "single", single, progress=False).read_text())
    for name, entry in manifest["outputs"].items():
        a = read_volume(tmp_path / "single" / entry["image"]).array
        b = read_volume(tmp_path / "batched" / entry["image"]).array
        assert np.array_equal(a, b), name
    stamp = {n: (tmp_path / "batched" / e["image"]).stat().st_mtime_ns for n, e in manifest["outputs"].items()}
    generate_dataset(model, lung, tmp_path / "batched", FAST, progress=False)  # everything done: nothing rewritten
    assert all((tmp_path / "batched" / manifest["outputs"][n]["image"]).stat().st_mtime_ns == t for n, t in stamp.items())


def test_python_api_inpaint(lung, checkpoint):
    model = lefusion.load(checkpoint)
    image = read_volume(next((lung / "Normal" / "Image").glob("*.nii.gz")))
    mask = read_volume(next((lung / "Normal" / "Mask").glob("*.nii.gz")))
    out = model.inpaint(image, mask, preset=2, seed=0, sampler=TimeTravel(2, 1))
    assert out.shape == image.shape and out.dtype == image.array.dtype
    assert np.array_equal(out[mask.array == 0], image.array[mask.array == 0])
    again = model.inpaint(image.array, mask.array, preset=2, seed=0, sampler=TimeTravel(2, 1))
    assert np.array_equal(out, again)


def test_cli_train_and_generate(lung, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(lung),
        "--out",
        str(run),
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--grad-accum",
        "1",
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
        "4",
        "--roi-shape",
        *map(str, ROI),
    ]
    assert main(args) == 0
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(run / "checkpoint"),
                "--data",
                str(lung),
                "--out",
                str(out),
                "--preset",
                "mix",
                "--jump-length",
                "1",
                "--jump-n-sample",
                "1",
                "--max-cases",
                "1",
            ]
        )
        == 0
    )
    assert len(list((out / "images").glob("*.nii.gz"))) == 1
    assert "outputs in" in capsys.readouterr().out


def test_two_class_cardiac_train_and_generate(tmp_path):
    """EMIDEC layout: MI (3) and PMO (4) in channels 0 and 1, cavity/myocardium (1, 2) kept as background."""
    from lefusion.phantoms import write_cardiac_phantom

    root = tmp_path / "cardiac"
    write_cardiac_phantom(root, n_pathological=4, n_normal=2, seed=0, roi_shape=(4, 32, 32), spacing=(8.0, 3.0, 3.0))
    ckpt = train_on_folder(
        root,
        tmp_path / "run",
        TrainConfig(steps=2, batch_size=2, grad_accum=1, save_every=2),
        TINY,
        SCHEDULE,
        preprocess=PreprocessConfig(modality="mri", roi_shape=(4, 32, 32)),
        n_presets=1,
        progress=False,
    )
    model = lefusion.load(ckpt)
    cfg = model.config
    assert cfg.lesion_labels == (3, 4) and cfg.context_labels == (1, 2)
    assert cfg.denoiser.channels == 2 and cfg.denoiser.cond_dim == 32
    assert len(cfg.hist_presets) == 1 and len(cfg.hist_presets[0]) == 32
    manifest = json.loads(
        generate_dataset(model, root, tmp_path / "gen", GenerateConfig(presets=("1",), sampler=Ancestral()), progress=False).read_text()
    )
    assert len(manifest["outputs"]) == 2
    seen = set()
    for entry in manifest["outputs"].values():
        source, label = read_volume(entry["source_image"]), read_volume(entry["source_mask"]).array
        generated = read_volume(tmp_path / "gen" / entry["image"]).array
        background = ~np.isin(label, (3, 4))
        assert np.array_equal(generated[background], source.array[background])
        for cls in (3, 4):
            if (label == cls).any():  # a normal case's candidate mask may hold one class only
                assert not np.array_equal(generated[label == cls], source.array[label == cls]), f"class {cls} not generated"
                seen.add(cls)
    assert seen == {3, 4}, f"only classes {seen} were generated: the two-class path was not exercised"
