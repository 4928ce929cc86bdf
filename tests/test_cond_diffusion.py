"""Cond-Diffusion baseline: network input, training and generation through the CLI, determinism,
and refusing a checkpoint of the wrong method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lefusion
from lefusion.checkpoints import save_model
from lefusion.cli import main
from lefusion.config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig, context_channels
from lefusion.data.labels import class_masks
from lefusion.diffusion.conditional import EXTRA_KEY, MASKED_FILL, cond_diffusion_loss, network_context, sample_cond_diffusion
from lefusion.diffusion.model import DiffusionModel
from lefusion.diffusion.schedule import NoiseSchedule
from lefusion.errors import LeFusionError
from lefusion.generation import GenerateConfig, generate_dataset
from lefusion.generation.diffusion_methods import CondDiffusionGenerator
from lefusion.io import Volume, read_volume, write_volume
from lefusion.masks.diffmask import diffmask_model_config
from lefusion.models import Denoiser
from lefusion.phantoms import write_lung_phantom
from lefusion.training import TrainConfig
from lefusion.training.run import RUN_CONFIG, train_on_folder

pytestmark = pytest.mark.usefixtures("one_thread")

ROI = (8, 16, 16)
TINY = DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
# where a centred ROI sits in a (D + 3, H + 5, W + 5) volume: torchio's rule, ceil(excess / 2) first
INNER = (slice(2, 2 + ROI[0]), slice(3, 3 + ROI[1]), slice(3, 3 + ROI[2]))
ARCH = ["--dim", "8", "--dim-mults", "1", "2", "--heads", "2", "--dim-head", "8", "--timesteps", "4", "--roi-shape", *map(str, ROI)]


@pytest.fixture(scope="module")
def lung(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "lung"
    write_lung_phantom(root, n_pathological=4, n_normal=2, n_test=1, seed=0, roi_shape=ROI)
    return root


@pytest.fixture(scope="module")
def checkpoint(lung, tmp_path_factory) -> Path:
    """A Cond-Diffusion model trained for 2 steps through the CLI."""
    run = tmp_path_factory.mktemp("run") / "cond"
    args = [
        "train",
        "--method",
        "cond-diffusion",
        "--data",
        str(lung),
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
        "--presets-k",
        "2",
        *ARCH,
    ]
    assert main(args) == 0
    return run / "checkpoint"


def _save_untrained(config: ModelConfig, folder: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return save_model(DiffusionModel(config, Denoiser(config.denoiser)), folder)


def _tiny_cond_model(n_classes: int = 1) -> tuple[Denoiser, NoiseSchedule]:
    cfg = DenoiserConfig(
        dim=8,
        dim_mults=(1, 2),
        attn_heads=2,
        attn_dim_head=8,
        channels=n_classes,
        cond_dim=16 * n_classes,
        extra_in_channels=context_channels("cond-diffusion", n_classes),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Denoiser(cfg).eval()
    return net, NoiseSchedule(ScheduleConfig(timesteps=4))


def _case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """image (1, 1, *ROI) in [-1, 1], label (1, 1, *ROI) with a box lesion of label 1."""
    image = torch.rand((1, 1, *ROI), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    label = torch.zeros((1, 1, *ROI), dtype=torch.long)
    label[..., 3:6, 5:10, 6:11] = 1
    return image, label


# ------------------------------------------------------------------------------------ network input


def test_context_is_masks_and_masked_image():
    image, label = _case()
    masks = class_masks(label, (1,))
    context = network_context(image, masks)
    assert context.shape == (1, 2, *ROI)
    assert torch.equal(context[:, 0], masks[:, 0] * 2 - 1), "mask channel in -1/+1"
    lesion = label[:, 0] == 1
    assert torch.all(context[:, 1][lesion] == MASKED_FILL)
    assert torch.equal(context[:, 1][~lesion], image[:, 0][~lesion])

    inside = image.clone()
    inside[label == 1] = 0.9  # another lesion texture: the network must not see it
    assert torch.equal(network_context(inside, masks), context)
    outside = image.clone()
    outside[..., 0, 0, 0] = 0.5  # the context it is conditioned on
    assert not torch.equal(network_context(outside, masks), context)


def test_context_masks_the_union_of_classes():
    image, _ = _case()
    label = torch.zeros((1, 1, *ROI), dtype=torch.long)
    label[..., 1:3, 2:5, 2:5] = 3
    label[..., 5:7, 9:12, 9:12] = 4
    context = network_context(image, class_masks(label, (3, 4)))
    assert context.shape[1] == context_channels("cond-diffusion", 2) == 3
    assert torch.all(context[:, 2][label[:, 0] > 0] == MASKED_FILL)
    assert torch.equal(context[:, 2][label[:, 0] == 0], image[:, 0][label[:, 0] == 0])


def _recording(net: Denoiser) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


def test_sampler_feeds_masks_and_masked_image_and_ignores_the_lesion_texture():
    net, schedule = _tiny_cond_model()
    image, label = _case()
    seen = _recording(net)
    gens = lambda: [torch.Generator().manual_seed(5)]  # noqa: E731
    out = sample_cond_diffusion(net, schedule, image, label, (1,), None, gens())
    assert out.shape == (1, 1, *ROI) and out.abs().max() <= 1
    expected = network_context(image, class_masks(label, (1,)))
    assert len(seen) == schedule.num_timesteps
    for x in seen:
        assert x.shape == (1, 1 + 2, *ROI) and torch.equal(x[:, 1:], expected)

    inside = image.clone()
    inside[label == 1] = 0.9
    assert torch.equal(sample_cond_diffusion(net, schedule, inside, label, (1,), None, gens()), out), (
        "the lesion's real texture must not reach the network"
    )
    outside = image.clone()
    outside[label == 0] *= 0.5
    changed = sample_cond_diffusion(net, schedule, outside, label, (1,), None, gens())
    assert not torch.equal(changed, out), "the masked image is an input"
    assert not torch.equal(out[label == 0], image[label == 0]), "the whole ROI is generated, background included"


def test_two_classes_take_their_voxels_from_their_channel():
    net, schedule = _tiny_cond_model(n_classes=2)
    image, _ = _case()
    label = torch.zeros((1, 1, *ROI), dtype=torch.long)
    label[..., 1:3, 2:5, 2:5] = 3
    label[..., 5:7, 9:12, 9:12] = 4
    seen = _recording(net)
    out = sample_cond_diffusion(net, schedule, image, label, (3, 4), torch.full((1, 32), 1 / 16), [torch.Generator().manual_seed(1)])
    assert out.shape == (1, 1, *ROI) and torch.isfinite(out).all()
    assert all(x.shape == (1, 2 + 3, *ROI) for x in seen)


def test_loss_feeds_masks_and_masked_image():
    net, schedule = _tiny_cond_model()
    image, label = _case()
    masks = class_masks(label, (1,))
    seen = _recording(net)
    gen = torch.Generator().manual_seed(0)
    t, noise = torch.tensor([2]), torch.randn(image.shape, generator=gen)
    loss = cond_diffusion_loss(net, schedule, image, masks, t, noise, torch.full((1, 16), 1 / 16), "l1")
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert len(seen) == 1 and torch.equal(seen[0][:, 1:], network_context(image, masks))


# ------------------------------------------------------------------------------- train and generate


def test_cli_training_writes_a_marked_cond_diffusion_checkpoint(checkpoint):
    model = lefusion.load(checkpoint)
    den = model.config.denoiser
    assert (den.channels, den.extra_in_channels, den.cond_dim) == (1, 2, 16)
    assert model.config.loss == "global" and len(model.config.hist_presets) == 2
    assert model.kind == "cond-diffusion" and EXTRA_KEY in model.extra and model.extra["train"]["method"] == "cond-diffusion"
    assert len((checkpoint.parent / "log.csv").read_text().splitlines()) == 3


def test_cli_generate_writes_the_whole_generated_roi(lung, checkpoint, tmp_path, capsys):
    out = tmp_path / "gen"
    args = [
        "generate",
        "--method",
        "cond-diffusion",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(lung),
        "--out",
        str(out),
        "--preset",
        "1",
        "2",
        "--seed",
        "0",
        "--batch-size",
        "3",
    ]
    assert main(args) == 0
    assert "outputs in" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "cond-diffusion" and manifest["model"][EXTRA_KEY]["masked_fill"] == MASKED_FILL
    assert len(manifest["outputs"]) == 2 * 2  # 2 normal cases x 2 presets
    for entry in manifest["outputs"].values():
        assert entry["method"] == "cond-diffusion" and entry["preset"] in (1, 2)
        source, mask = read_volume(entry["source_image"]), read_volume(entry["source_mask"])
        generated, label = read_volume(out / entry["image"]), read_volume(out / entry["label"])
        assert generated.array.dtype == source.array.dtype and generated.geometry.matches(source.geometry)
        assert np.array_equal(label.array, mask.array)
        background = mask.array == 0
        # the ROI is the whole phantom volume here: the model's background replaces the source's
        assert not np.array_equal(generated.array[background], source.array[background])
        assert (out / entry["preview"]).is_file()


def test_voxels_outside_the_roi_box_stay_the_source(lung, checkpoint, tmp_path):
    """Cases bigger than the model's ROI: the box is regenerated, everything around it is kept bit for bit."""
    data = tmp_path / "big"
    rng = np.random.default_rng(0)
    for path in sorted((lung / "Normal" / "Image").glob("*.nii.gz")):
        image = read_volume(path).array
        mask = read_volume(lung / "Normal" / "Mask" / path.name.replace("Vol", "Mask")).array
        # random HU around the phantom; the centred ROI of the padded volume is the phantom itself
        big = rng.integers(-1000, 400, (ROI[0] + 3, ROI[1] + 5, ROI[2] + 5)).astype(image.dtype)
        big[INNER] = image
        write_volume(Volume(big), data / "images" / path.name)
        write_volume(Volume(np.pad(mask, [(s.start, e - s.stop) for s, e in zip(INNER, big.shape)])), data / "masks" / path.name)
    model = lefusion.load(checkpoint)
    config = GenerateConfig(presets=("1",), batch_size=2, previews=False)
    manifest = json.loads(generate_dataset(CondDiffusionGenerator(model), data, tmp_path / "gen", config, progress=False).read_text())
    assert len(manifest["outputs"]) == 2
    for entry in manifest["outputs"].values():
        source = read_volume(entry["source_image"]).array
        generated = read_volume(tmp_path / "gen" / entry["image"]).array
        box = np.zeros(source.shape, dtype=bool)
        box[INNER] = True
        assert np.array_equal(generated[~box], source[~box])
        assert not np.array_equal(generated[box], source[box])


def test_same_seed_same_output_whatever_the_batch(lung, checkpoint, tmp_path):
    model = lefusion.load(checkpoint)
    base = GenerateConfig(presets=("1", "mix"), seed=3, batch_size=4, previews=False)
    runs = {
        "batched": base,
        "again": base,
        "single": GenerateConfig(**{**base.__dict__, "batch_size": 1}),
        "other": GenerateConfig(**{**base.__dict__, "seed": 4}),
    }
    arrays = {}
    for name, config in runs.items():
        manifest = json.loads(generate_dataset(CondDiffusionGenerator(model), lung, tmp_path / name, config, progress=False).read_text())
        arrays[name] = {k: read_volume(tmp_path / name / e["image"]).array for k, e in manifest["outputs"].items()}
    assert len(arrays["batched"]) == 4
    for key, value in arrays["batched"].items():
        assert np.array_equal(value, arrays["again"][key]), f"{key}: same seed, different output"
        # Batched and single-sample convolutions round differently (about 1e-6 per network call), so
        # a voxel may land one HU apart after the T steps and the int16 cast; a seed mix-up would
        # change the whole ROI.
        diff = np.abs(value.astype(np.int64) - arrays["single"][key].astype(np.int64))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"{key}: output depends on the batch size (max {diff.max()})"
        assert not np.array_equal(value, arrays["other"][key]), f"{key}: another seed gave the same output"


def test_progress_counts_one_unit_per_reverse_step(lung, checkpoint):
    model = lefusion.load(checkpoint)
    generator = CondDiffusionGenerator(model)
    assert generator.steps(3) == model.schedule.num_timesteps == 4


# ---------------------------------------------------------------------------- wrong method / checkpoint


def test_lefusion_refuses_a_cond_diffusion_checkpoint(lung, checkpoint, tmp_path, capsys):
    args = ["generate", "--method", "lefusion", "--checkpoint", str(checkpoint), "--data", str(lung), "--out", str(tmp_path / "g")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Cond-Diffusion" in err and "--method cond-diffusion" in err and "mask model" not in err


def test_without_method_the_checkpoint_kind_picks_it(lung, checkpoint, tmp_path):
    out = tmp_path / "g"
    args = ["generate", "--checkpoint", str(checkpoint), "--data", str(lung), "--out", str(out), "--preset", "1", "--max-cases", "1"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "cond-diffusion" and manifest["settings"]["sampler"] == {"kind": "ancestral"}


def test_python_inpaint_refuses_a_cond_diffusion_model(checkpoint):
    image, mask = np.zeros(ROI, np.float32), np.zeros(ROI, np.uint8)
    mask[3:5, 6:9, 6:9] = 1
    with pytest.raises(LeFusionError, match="Cond-Diffusion"):
        lefusion.load(checkpoint).inpaint(image, mask)


def test_cond_diffusion_refuses_other_checkpoints(lung, tmp_path, capsys):
    config = ModelConfig(denoiser=TINY, schedule=ScheduleConfig(timesteps=4), preprocess=PreprocessConfig(roi_shape=ROI))
    lesion = _save_untrained(config, tmp_path / "lefusion")
    mask = _save_untrained(diffmask_model_config(TINY, 4, (8, 16, 16)), tmp_path / "diffmask")
    for folder, kind in ((lesion, "a LeFusion lesion model"), (mask, "a mask model (DiffMask)")):
        args = ["generate", "--method", "cond-diffusion", "--checkpoint", str(folder), "--data", str(lung), "--out", str(tmp_path / "g")]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert kind in err and "not a Cond-Diffusion model" in err and "--method cond-diffusion" in err
    with pytest.raises(LeFusionError, match="mask model"):  # LeFusion's own refusal of a DiffMask is unchanged
        generate_dataset(lefusion.load(mask), lung, tmp_path / "g", GenerateConfig(), progress=False)
    assert not (tmp_path / "g").exists()


def test_cli_argument_errors(lung, checkpoint, tmp_path, capsys):
    assert main(["generate", "--method", "cond-diffusion", "--data", str(lung), "--out", str(tmp_path / "g")]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
    args = [
        "generate",
        "--method",
        "cond-diffusion",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(lung),
        "--out",
        str(tmp_path / "g"),
        "--texture",
        "0",
        "10",
    ]
    assert main(args) == 2
    assert "not cond-diffusion" in capsys.readouterr().err
    args = [
        "train",
        "--method",
        "cond-diffusion",
        "--loss",
        "lesion",
        "--data",
        str(lung),
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "1",
        *ARCH,
    ]
    assert main(args) == 2
    assert "global loss" in capsys.readouterr().err


def test_run_folder_refuses_the_other_method(lung, checkpoint):
    cfg = TrainConfig(steps=3, batch_size=2, grad_accum=1, save_every=2)  # method lefusion in the cond-diffusion run
    with pytest.raises(LeFusionError, match="other settings"):
        train_on_folder(
            lung, checkpoint.parent, cfg, TINY, ScheduleConfig(timesteps=4), preprocess=PreprocessConfig(roi_shape=ROI), progress=False
        )


def test_lefusion_run_folders_from_before_the_method_setting_still_resume(lung, tmp_path):
    run = tmp_path / "old"
    kwargs = dict(
        denoiser=TINY, schedule=ScheduleConfig(timesteps=4), preprocess=PreprocessConfig(roi_shape=ROI), n_presets=2, progress=False
    )
    train_on_folder(lung, run, TrainConfig(steps=1, batch_size=1, grad_accum=1), **kwargs)
    record = json.loads((run / RUN_CONFIG).read_text())
    del record["train"]["method"]  # as written before TrainConfig had it
    (run / RUN_CONFIG).write_text(json.dumps(record))
    train_on_folder(lung, run, TrainConfig(steps=2, batch_size=1, grad_accum=1), **kwargs)
    assert json.loads((run / "checkpoint" / "config.json").read_text())["extra"]["steps_done"] == 2
