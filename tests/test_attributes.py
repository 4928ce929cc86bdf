"""Attribute control: LIDC shape ratings for DiffMask (encoding, guidance, validation, training,
determinism, CLI) and texture classes for LeFusion (rating -> class -> preset)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lefusion.cli import main
from lefusion.config import DenoiserConfig
from lefusion.control.attributes import (
    SHAPE_ATTRIBUTES,
    check_rating,
    drop_conditions,
    encode_ratings,
    texture_class_of_rating,
    texture_classes_from_rated,
    texture_preset,
)
from lefusion.diffusion.guidance import Guided
from lefusion.diffusion.model import DiffusionModel
from lefusion.errors import LeFusionError
from lefusion.masks.diffmask import attribute_conditions, control_sphere, diffmask_model_config, model_attributes, sample_masks
from lefusion.masks.shape import irregularity_descriptors
from lefusion.masks.shapes import DiffMaskShapes
from lefusion.models import Denoiser
from lefusion.training.diffmask import DiffMaskTrainConfig, train_diffmask

BOX = (8, 16, 16)
TINY = DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(attributes: tuple[str, ...]) -> DiffusionModel:
    torch.manual_seed(3)
    config = diffmask_model_config(TINY, timesteps=6, box=BOX, prediction="x0", attributes=attributes)
    extra = {"diffmask": {"box": list(BOX), **({"attributes": list(attributes)} if attributes else {})}}
    return DiffusionModel(config=config, denoiser=Denoiser(config.denoiser), extra=extra).eval()


@pytest.fixture(scope="module")
def conditioned() -> DiffusionModel:
    return _model(SHAPE_ATTRIBUTES)


@pytest.fixture(scope="module")
def unconditioned() -> DiffusionModel:
    return _model(())


def test_encoding_and_null_condition():
    cond = encode_ratings(np.array([[1, 3, 5, np.nan], [np.nan] * 4]), SHAPE_ATTRIBUTES)
    np.testing.assert_array_equal(cond[0], [-1, 0, 1, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(cond[1], np.zeros(8))  # nothing given = the null condition
    dropped = drop_conditions(
        np.ones((3, 8), np.float32), np.array([0.05, 0.5, 0.5]), np.array([[0.9] * 4, [0.9] * 4, [0.01, 0.9, 0.9, 0.9]]), 0.15, 0.1
    )
    np.testing.assert_array_equal(dropped[0], np.zeros(8))
    np.testing.assert_array_equal(dropped[1], np.ones(8))
    np.testing.assert_array_equal(dropped[2], [0, 1, 1, 1, 0, 1, 1, 1])


@pytest.mark.parametrize("value", [0, 5.5, -1, "x", None])
def test_rating_outside_1_to_5_is_a_clear_error(value):
    with pytest.raises(LeFusionError, match="from 1 to 5"):
        check_rating("spiculation", value)


def test_model_config_records_the_attributes(conditioned, unconditioned):
    assert conditioned.config.denoiser.cond_dim == 8 and model_attributes(conditioned) == SHAPE_ATTRIBUTES
    assert unconditioned.config.denoiser.cond_dim is None and model_attributes(unconditioned) == ()
    with pytest.raises(LeFusionError, match="each at most once"):
        diffmask_model_config(TINY, 6, BOX, attributes=("texture",))


def test_requests_are_validated(conditioned, unconditioned):
    with pytest.raises(LeFusionError, match="from 1 to 5"):
        sample_masks(conditioned, 1, 4.0, attributes={"spiculation": 6})
    with pytest.raises(LeFusionError, match="without attribute conditioning") as info:
        sample_masks(unconditioned, 1, 4.0, attributes={"spiculation": 3})
    assert str(unconditioned.source) in str(info.value)  # names the model
    with pytest.raises(LeFusionError, match="guidance needs"):
        sample_masks(unconditioned, 1, 4.0, guidance=2.0)
    with pytest.raises(LeFusionError, match="guidance must be"):
        attribute_conditions(conditioned, {"margin": 2}, 1, guidance=-1.0)
    with pytest.raises(LeFusionError, match="without attribute conditioning"):
        DiffMaskShapes(unconditioned, attributes={"lobulation": 2})


def test_conditioned_sampling_runs_with_and_without_the_condition_and_is_seeded(conditioned):
    asked = {"spiculation": 4, "lobulation": 3, "sphericity": 2, "margin": 3}
    a = sample_masks(conditioned, 2, 5.0, seed=7, attributes=asked, guidance=2.0)
    b = sample_masks(conditioned, 2, 5.0, seed=7, attributes=asked, guidance=2.0, batch_size=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # same seed, same output, whatever the batching
    plain = sample_masks(conditioned, 2, 5.0, seed=7)
    partial = sample_masks(conditioned, 2, 5.0, seed=7, attributes={"spiculation": 1})
    assert all(m.any() for m in a + plain + partial)
    per_sample = sample_masks(conditioned, 2, 5.0, seed=7, attributes=[asked, {}], guidance=2.0)
    np.testing.assert_array_equal(per_sample[0], a[0])
    np.testing.assert_array_equal(per_sample[1], sample_masks(conditioned, 2, 5.0, seed=7, guidance=2.0)[1])


def test_guidance_combines_the_two_branches():
    calls = []

    def net(x, t, cond):
        calls.append(len(x))
        return x * 0 + cond[:, :1, None, None, None]

    null = torch.zeros(2)
    cond = torch.tensor([[1.0, 1.0]])
    x, t = torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, dtype=torch.long)
    out = Guided(net, null, 3.0)(x, t, cond)
    assert torch.allclose(out, torch.full_like(out, 3.0)) and calls == [2]  # 0 + 3 (1 - 0), one batched call
    assert torch.allclose(Guided(net, null, 1.0)(x, t, cond), torch.ones_like(out)) and calls[-1] == 1


def test_training_with_ratings_exports_a_conditioned_model(tmp_path):
    rng = np.random.default_rng(0)
    masks = np.stack([control_sphere((10, 20, 20), (4.5, 9.5, 9.5), d) for d in rng.uniform(3, 5, 5)]).astype(np.uint8)
    ratings = np.array([[1, 2, 3, np.nan], [5, 5, 5, 5], [3, 3, 1, 1], [2, 2, 2, 2], [4, 4, 4, 4]], float)
    np.savez(
        tmp_path / "rated.npz", masks=masks, ratings=np.c_[ratings, ratings[:, :1]], rating_names=np.array([*SHAPE_ATTRIBUTES, "texture"])
    )
    config = DiffMaskTrainConfig(steps=2, batch_size=2, box=BOX, save_every=1, attributes=SHAPE_ATTRIBUTES, device="cpu")
    path = train_diffmask(tmp_path / "rated.npz", tmp_path / "run", config, TINY, timesteps=4, progress=False)
    extra = json.loads((path / "config.json").read_text())["extra"]["diffmask"]
    assert extra["attributes"] == list(SHAPE_ATTRIBUTES) and extra["attribute_counts"]["spiculation"]["5.0"] == 1
    with pytest.raises(LeFusionError, match="ratings"):
        train_diffmask(masks, tmp_path / "run2", config, TINY, timesteps=4, progress=False)
    np.savez(tmp_path / "unrated.npz", masks=masks)
    with pytest.raises(LeFusionError, match="rebuild them with `lefusion masks lidc`"):
        train_diffmask(tmp_path / "unrated.npz", tmp_path / "run3", config, TINY, timesteps=4, progress=False)


def test_cli_masks_sample_with_ratings(tmp_path, conditioned, capsys):
    from lefusion.checkpoints.format import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "dm", conditioned.config, conditioned.denoiser.state_dict(), conditioned.extra)
    args = ["masks", "sample", "--checkpoint", str(ckpt), "--n", "2", "--diameter", "4", "--spiculation", "4", "--margin", "2"]
    assert main([*args, "--guidance", "2", "--out", str(tmp_path / "a")]) == 0
    meta = json.loads((tmp_path / "a" / "masks.json").read_text())
    assert meta["attributes"] == {"margin": 2.0, "spiculation": 4.0} and meta["guidance"] == 2.0
    with pytest.raises(SystemExit):
        main([*args[:-4], "--spiculation", "7", "--out", str(tmp_path / "b")])
    assert "from 1 to 5" in capsys.readouterr().err


def test_irregularity_descriptors_see_spikes():
    ball = control_sphere((24, 24, 24), (11.5, 11.5, 11.5), 12.0)
    spiky = ball.copy()
    for axis in range(3):  # six one-voxel spikes of 5 voxels out of the surface
        for sign in (-1, 1):
            idx = [11, 11, 11]
            for k in range(6, 11):
                idx[axis] = 11 + sign * k
                spiky[tuple(idx)] = True
    smooth, rough = irregularity_descriptors(ball), irregularity_descriptors(spiky)
    assert rough["opening_loss"] > smooth["opening_loss"] and rough["radial_cv"] > smooth["radial_cv"]
    assert smooth["opening_loss"] < 0.02


@pytest.mark.parametrize(
    "rating,name", [(1, "ground-glass"), (2, "ground-glass"), (2.5, "part-solid"), (3, "part-solid"), (4, "solid"), (5, "solid")]
)
def test_texture_rating_to_class(rating, name):
    assert texture_class_of_rating(rating) == name


def test_texture_class_to_preset_mapping():
    presets = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    hists = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.1, 0.8, 0.1], [0, 0.2, 0.8], [0, 0.1, 0.9]])
    mapping = texture_classes_from_rated(hists, [1, 2, 3, 5, 4], presets)
    assert mapping == {"ground-glass": 1, "part-solid": 2, "solid": 3}
    assert texture_preset(mapping, "solid", "m") == 3
    with pytest.raises(LeFusionError, match="texture-classes"):
        texture_preset(None, "solid", "my_model")
    with pytest.raises(LeFusionError, match="texture class must be"):
        texture_preset(mapping, "fluffy", "m")


def test_bundled_demo_model_maps_the_phantom_families():
    from lefusion.checkpoints import load_model

    model = load_model("demo_lung")
    assert model.extra["texture_classes"] == {"ground-glass": 1, "part-solid": 2, "solid": 3}
    means = [float(np.dot(p, np.linspace(-1 + 1 / 16, 1 - 1 / 16, 16))) for p in model.config.hist_presets]
    assert means == sorted(means)  # faint haze, part-solid, solid: presets are ordered by intensity


@pytest.fixture(scope="module")
def lung(tmp_path_factory):
    from lefusion.phantoms import write_lung_phantom

    root = tmp_path_factory.mktemp("texture") / "lung"
    write_lung_phantom(root, n_pathological=4, n_normal=2, n_test=1, seed=0, roi_shape=(8, 16, 16), spacing=(2.0, 2.0, 2.0))
    return root


def test_generate_texture_class_picks_the_checkpoints_preset(lung, tmp_path, capsys):
    base = ["generate", "--method", "handcrafted", "--checkpoint", "demo_lung", "--data", str(lung), "--max-cases", "1"]
    assert main([*base, "--texture-rating", "4", "--out", str(tmp_path / "g")]) == 0
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert [e["preset"] for e in manifest["outputs"].values()] == [3]
    assert manifest["settings"]["texture_class"] == "solid"
    assert main([*base, "--texture-class", "ground-glass", "--preset", "2", "--out", str(tmp_path / "x")]) == 2
    assert "drop --preset" in capsys.readouterr().err
    assert main([*base, "--texture-class", "solid", "--texture", "-100", "40", "--out", str(tmp_path / "x")]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*base, "--texture-rating", "6", "--out", str(tmp_path / "x")]) == 2
    assert "from 1 to 5" in capsys.readouterr().err
    assert main([*base[:4], "demo_lung_repaint", *base[5:], "--texture-class", "solid", "--out", str(tmp_path / "x")]) == 2
    assert "demo_lung_repaint: records no texture-class" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_texture_classes_cli_maps_the_phantom_families(lung, tmp_path, capsys):
    import shutil

    from lefusion.checkpoints.loading import bundled_model_dir

    ckpt = tmp_path / "demo"
    shutil.copytree(bundled_model_dir("demo_lung"), ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["extra"].pop("texture_classes")
    (ckpt / "config.json").write_text(json.dumps(config))
    args = ["texture-classes", "--checkpoint", str(ckpt), "--data", str(lung), "--ratings", str(lung / "phantom.json"), "--write"]
    assert main(args) == 0
    mapping = json.loads((ckpt / "config.json").read_text())["extra"]["texture_classes"]
    assert set(mapping.values()) <= {1, 2, 3} and mapping  # a 3-case phantom: every rated family gets a preset
    assert "recorded in" in capsys.readouterr().out


def test_placed_diffmask_shapes_record_their_ratings(conditioned):
    source = DiffMaskShapes(conditioned, attributes={"spiculation": 4, "margin": None}, guidance=2.0)
    (shape,) = source.draw([4.0], [5])
    assert shape.mask.any() and shape.record["attributes"] == {"spiculation": 4} and shape.record["guidance"] == 2.0
    (again,) = source.draw([4.0], [5])
    np.testing.assert_array_equal(shape.mask, again.mask)


def test_sample_x0_without_cond_uses_the_null_condition(conditioned, unconditioned):
    from lefusion.masks.diffmask import sample_x0

    sphere = control_sphere(BOX, (3.5, 7.5, 7.5), 4.0)[None]
    plain = sample_x0(conditioned, sphere, seed=2)
    null = sample_x0(conditioned, sphere, seed=2, cond=np.zeros((1, 8), np.float32))
    torch.testing.assert_close(plain, null)
    with pytest.raises(LeFusionError, match="no attribute conditioning"):
        sample_x0(unconditioned, sphere, cond=np.zeros((1, 8), np.float32))
