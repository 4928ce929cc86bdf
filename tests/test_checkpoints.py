"""Checkpoint import, conversion, round trip and the errors a user sees."""

from __future__ import annotations

import shutil

import pytest
import torch

import lefusion
from lefusion.checkpoints.format import WEIGHTS_NAME
from lefusion.cli import main
from lefusion.control.presets import read_presets
from lefusion.errors import LeFusionError

from .conftest import load_golden


@pytest.mark.parametrize("name", ["lidc_tiny", "emidec_tiny"])
def test_convert_then_load_is_bit_identical(tmp_path, reference_dir, name):
    src = reference_dir / f"{name}_checkpoint.pt"
    out = tmp_path / "converted"
    presets = reference_dir / ("lidc_hist_clusters.json" if name == "lidc_tiny" else "emidec_hist_clusters.json")
    assert main(["convert", str(src), str(out), "--weights", "ema", "--presets", str(presets)]) == 0
    published, converted = lefusion.load(src), lefusion.load(out)
    g = load_golden(reference_dir, f"{name}_forward.pt")
    with torch.no_grad():
        assert torch.equal(published.denoiser(g["x"], g["t"], g["cond"]), converted.denoiser(g["x"], g["t"], g["cond"]))
    n_presets = 3 if name == "lidc_tiny" else 1
    assert len(converted.config.hist_presets) == n_presets
    assert all(len(p) == converted.config.denoiser.cond_dim for p in converted.config.hist_presets)
    assert converted.config.lesion_labels == ((1,) if name == "lidc_tiny" else (3, 4))


def test_model_or_ema_weights_on_request(tmp_path, reference_dir):
    src = tmp_path / "ck.pt"
    data = torch.load(reference_dir / "lidc_tiny_checkpoint.pt", weights_only=True)
    key = "denoise_fn.module.final_conv.1.bias"
    data["model"] = dict(data["model"])  # the reference file shares one dict between model and ema
    data["model"][key] = data["model"][key] + 1.0
    torch.save(data, src)
    ema, raw = lefusion.load(src, weights="ema"), lefusion.load(src, weights="model")
    assert torch.equal(raw.denoiser.final_conv.bias, ema.denoiser.final_conv.bias + 1.0)


def test_presets_from_public_cluster_files(reference_dir):
    lidc = read_presets(reference_dir / "lidc_hist_clusters.json", 16)
    emidec = read_presets(reference_dir / "emidec_hist_clusters.json", 32)
    assert len(lidc) == 3 and len(emidec) == 1 and len(emidec[0]) == 32
    for preset in lidc:
        assert abs(sum(preset) - 1.0) < 1e-3


def test_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("hello")
    with pytest.raises(LeFusionError, match="notes.pt"):
        lefusion.load(bogus)
    with pytest.raises(LeFusionError, match="no such checkpoint"):
        lefusion.load(tmp_path / "missing.pt")


def test_truncated_checkpoint(tmp_path, reference_dir):
    data = (reference_dir / "lidc_tiny_checkpoint.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(LeFusionError, match="cut.pt"):
        lefusion.load(cut)
    folder = tmp_path / "ours"
    lefusion.load(reference_dir / "lidc_tiny_checkpoint.pt").save(folder)
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(LeFusionError, match="safetensors"):
        lefusion.load(folder)


def test_code_in_a_checkpoint_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, evil)
    with pytest.raises(LeFusionError, match="evil.pt"):
        lefusion.load(evil)
    assert (tmp_path / "victim").is_dir()


def test_wrong_architecture_names_keys_and_shapes(tmp_path, reference_dir):
    folder = tmp_path / "ours"
    lefusion.load(reference_dir / "lidc_tiny_checkpoint.pt").save(folder)
    config = (folder / "config.json").read_text().replace('"dim": 16', '"dim": 24', 1)
    (folder / "config.json").write_text(config)
    with pytest.raises(LeFusionError, match=r"shape mismatch \['.*: checkpoint \(16"):
        lefusion.load(folder)


def test_cli_reports_errors_on_one_line(tmp_path, capsys):
    bogus = tmp_path / "bad.pt"
    bogus.write_bytes(b"\x00" * 10)
    assert main(["convert", str(bogus), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lefusion: error:") and "bad.pt" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_bundled_model_loads_by_name():
    from lefusion.checkpoints.loading import bundled_model_dir

    model = lefusion.load("demo_lung")
    assert model.source == bundled_model_dir("demo_lung") and model.config.denoiser.dim == 16


@pytest.mark.parametrize(
    "name,kind,prediction",
    [("demo_lung", "lefusion", "eps"), ("demo_lung_cond_diffusion", "cond-diffusion", "eps"), ("diffmask_lidc", "diffmask", "x0")],
)
def test_checkpoints_from_before_configs_named_their_kind_still_load(tmp_path, name, kind, prediction):
    """A config.json without `kind` / `prediction` (as written before) gets them once, at load time."""
    import json

    from lefusion.checkpoints.loading import bundled_model_dir

    folder = tmp_path / name
    shutil.copytree(bundled_model_dir(name), folder)
    record = json.loads((folder / "config.json").read_text())
    assert record["kind"] == kind and record["prediction"] == prediction
    del record["kind"], record["prediction"]
    if kind == "diffmask":
        record["extra"]["diffmask"]["prediction"] = prediction  # where older DiffMask checkpoints kept it
    (folder / "config.json").write_text(json.dumps(record))
    model = lefusion.load(folder)
    assert (model.kind, model.config.prediction) == (kind, prediction)
    assert model.config == lefusion.load(name).config
