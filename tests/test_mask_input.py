"""Mask-input LeFusion models (`ModelConfig.mask_input`): the network also sees the lesion masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lefusion
from lefusion.cli import main
from lefusion.config import DenoiserConfig, ModelConfig, ScheduleConfig
from lefusion.data.labels import class_masks
from lefusion.diffusion.inpainting import inpaint_lesions
from lefusion.diffusion.losses import diffusion_loss
from lefusion.diffusion.sampling import Ancestral
from lefusion.diffusion.schedule import NoiseSchedule
from lefusion.errors import LeFusionError
from lefusion.io import read_volume
from lefusion.masks.diffmask import load_diffmask
from lefusion.phantoms import write_cardiac_phantom, write_lung_phantom

ARCH = ["--dim", "8", "--dim-mults", "1", "2", "--heads", "2", "--dim-head", "8", "--timesteps", "4"]


class RecordingNet(torch.nn.Module):
    """Stands in for the denoiser: remembers every input, predicts zero noise for K channels."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.inputs = k, []

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        self.inputs.append(x.clone())
        return torch.zeros(x.shape[0], self.k, *x.shape[2:])


def _label() -> torch.Tensor:
    label = torch.zeros(2, 1, 4, 8, 8, dtype=torch.long)
    label[0, 0, 1:3, 2:5, 2:5] = 3
    label[0, 0, 2, 5:7, 5:7] = 4
    label[1, 0, 1:4, 3:6, 1:4] = 4
    return label


def test_sampler_and_loss_feed_the_masks_after_x_as_minus_one_plus_one():
    schedule = NoiseSchedule(ScheduleConfig(timesteps=4))
    label, labels = _label(), (3, 4)
    expected = class_masks(label, labels) * 2 - 1
    net = RecordingNet(k=2)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    inpaint_lesions(net, schedule, torch.zeros(2, 1, 4, 8, 8), label, labels, None, gens, Ancestral(), mask_input=True)
    assert len(net.inputs) == 4
    for x in net.inputs:
        assert x.shape[1] == 4 and torch.equal(x[:, 2:], expected)
    plain = RecordingNet(k=2)
    inpaint_lesions(plain, schedule, torch.zeros(2, 1, 4, 8, 8), label, labels, None, gens, Ancestral())
    assert all(x.shape[1] == 2 for x in plain.inputs), "without mask_input the network sees x_t only (the release)"

    masks = class_masks(label, labels)
    net.inputs.clear()
    x0 = torch.zeros(2, 2, 4, 8, 8)
    diffusion_loss(net, schedule, x0, torch.tensor([1, 2]), torch.randn_like(x0), None, masks, "l2", context=masks * 2 - 1)
    assert torch.equal(net.inputs[0][:, 2:], expected)


def test_mask_input_needs_one_extra_channel_per_class():
    with pytest.raises(ValueError, match="one extra input channel per lesion class"):
        ModelConfig(denoiser=DenoiserConfig(channels=1, extra_in_channels=0), mask_input=True)
    config = ModelConfig(denoiser=DenoiserConfig(channels=1, extra_in_channels=1), mask_input=True)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    legacy = config.to_dict()
    del legacy["mask_input"]  # configs written before the field existed read as the release's layout
    assert ModelConfig.from_dict({**legacy, "denoiser": {**legacy["denoiser"], "extra_in_channels": 0}}).mask_input is False


@pytest.fixture(scope="module")
def lung(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "lung"
    write_lung_phantom(root, n_pathological=4, n_normal=2, n_test=1, seed=0, roi_shape=(8, 16, 16), spacing=(2.0, 2.0, 2.0))
    return root


def _train(data: Path, run: Path, roi: tuple[int, ...], extra: list[str]) -> Path:
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--save-every",
        "2",
        *ARCH,
        "--roi-shape",
        *map(str, roi),
        "--mask-input",
        *extra,
    ]
    assert main(args) == 0
    return run / "checkpoint"


def test_cli_trains_and_generates_with_mask_input_background_exact(lung, tmp_path):
    checkpoint = _train(lung, tmp_path / "run", (8, 16, 16), [])
    model = lefusion.load(checkpoint)
    assert model.config.mask_input and model.config.denoiser.extra_in_channels == 1
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(lung),
                "--out",
                str(out),
                "--preset",
                "1",
                "3",
                "--jump-length",
                "1",
                "--jump-n-sample",
                "1",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["outputs"]) == 4 and manifest["model"]["config"]["mask_input"] is True
    for entry in manifest["outputs"].values():
        source, mask = read_volume(entry["source_image"]).array, read_volume(entry["source_mask"]).array
        generated = read_volume(out / entry["image"]).array
        assert np.array_equal(generated[mask == 0], source[mask == 0])
        assert not np.array_equal(generated[mask > 0], source[mask > 0])
    image = read_volume(next((lung / "Normal" / "Image").glob("*.nii.gz")))
    mask = read_volume(next((lung / "Normal" / "Mask").glob("*.nii.gz")))
    api = model.inpaint(image, mask, preset=1, seed=0, sampler=Ancestral())
    assert np.array_equal(api[mask.array == 0], image.array[mask.array == 0])
    with pytest.raises(LeFusionError, match="not a DiffMask"):
        load_diffmask(checkpoint)


def test_two_class_mask_input_model_sees_one_mask_channel_per_class(tmp_path):
    root = tmp_path / "cardiac"
    write_cardiac_phantom(root, n_pathological=3, n_normal=1, seed=0, roi_shape=(4, 32, 32), spacing=(8.0, 3.0, 3.0))
    checkpoint = _train(root, tmp_path / "run", (4, 32, 32), ["--presets-k", "1"])
    den = lefusion.load(checkpoint).config.denoiser
    assert (den.channels, den.extra_in_channels, den.cond_dim) == (2, 2, 32)


def test_cond_diffusion_with_mask_input_is_refused(lung, tmp_path, capsys):
    args = [
        "train",
        "--data",
        str(lung),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "1",
        *ARCH,
        "--roi-shape",
        "8",
        "16",
        "16",
        "--method",
        "cond-diffusion",
        "--mask-input",
    ]
    assert main(args) == 2
    assert "already sees the masks" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint").exists()
