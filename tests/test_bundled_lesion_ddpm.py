"""The bundled Lesion-DDPM demo (assets/demo_brain_lesion_ddpm): small, documented, and it learnt its
condition: on a held-out phantom brain, generated from masks + organs only, the tissue contrasts
have FLAIR's order and the lesion mask brightens the voxels it marks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lefusion.checkpoints import bundled_model_dir, load_model
from lefusion.diffusion.sampling import DDIM
from lefusion.generation import GenerateConfig, generate_volumes
from lefusion.io import read_volume, write_volume

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "demo_brain_lesion_ddpm"


def test_bundled_lesion_ddpm_is_small_and_documented() -> None:
    folder = bundled_model_dir(NAME)
    assert (folder / "model.safetensors").stat().st_size < 10 * 2**20
    model = load_model(NAME)
    assert model.kind == "lesion-ddpm" and model.config.volume.volume_shape == (48, 56, 48)
    assert model.config.volume.anatomy_labels == (1, 2, 3)
    assert any("--method lesion-ddpm" in c for c in model.extra["commands"]), "the exact training command is recorded"


@pytest.mark.slow  # 13 s: the phantom brain, then two DDIM-10 volumes
def test_bundled_lesion_ddpm_follows_its_condition(tmp_path) -> None:
    """BRAIN-P004 of the training phantom (seed 0; held out in its test.txt, never trained on),
    generated from its masks + organs with DDIM 10 and seed 0: CSF < white < grey matter (measured
    0.75 / 1 / 1.16), and the same noise with the lesion mask emptied gives a darker lesion region
    (measured 739 with the mask, 635 without: the lesion channel brightens its voxels)."""
    pytest.importorskip("nilearn")
    from lefusion.phantoms.brain import make_brain_case
    from lefusion.phantoms.brain_lesions import lesion_count

    model = load_model(NAME)
    phantom = model.extra["phantom"]
    rng = np.random.default_rng([phantom["seed"], 31, 3])  # write_brain_phantom's draw for BRAIN-P004
    _, mask, organs, geometry, _ = make_brain_case(rng, lesion_count(rng), tuple(phantom["spacing"]))
    generated = {}
    for tag, lesions in (("with", mask), ("without", np.zeros_like(mask))):
        data, out = tmp_path / tag / "data", tmp_path / tag / "out"
        write_volume(lesions, data / "masks" / "BRAIN-P004.nii.gz", geometry)
        write_volume(organs, data / "organs" / "BRAIN-P004.nii.gz", geometry)
        generate_volumes(model, data, out, GenerateConfig(seed=0, sampler=DDIM(steps=10), batch_size=1), progress=False)
        entry = json.loads((out / "manifest.json").read_text())["outputs"]["BRAIN-P004_lesion-ddpm"]
        generated[tag] = read_volume(out / entry["image"]).array
    image, clean = generated["with"], mask == 0
    means = {label: image[(organs == label) & clean].mean() for label in (1, 2, 3)}
    assert means[1] < means[3] < means[2], means
    lesion = mask > 0
    assert image[lesion].mean() > 1.05 * generated["without"][lesion].mean()
