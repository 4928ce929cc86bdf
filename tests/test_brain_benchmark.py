"""The brain MRI benchmark recipe (scripts/brain_benchmark.py): every command parses, the data flow
holds (lesions go into the lesion-free copy, every method meets the same placed masks, test brains
never reach a generator), and the smoke profile runs end to end with a report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("monai")
pytest.importorskip("nilearn")


def _load_recipe():
    script = Path(__file__).resolve().parents[1] / "scripts" / "brain_benchmark.py"
    spec = importlib.util.spec_from_file_location("brain_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("profile", ["cpu", "gpu", "smoke"])
def test_recipe_commands_parse_and_share_the_masks(profile: str) -> None:
    from lefusion.cli import build_parser

    recipe = _load_recipe()
    steps = recipe.plan(recipe.PROFILES[profile], recipe.ALL_METHODS)
    parser = build_parser()
    for step in steps:
        if step.argv is not None:
            parser.parse_args(list(step.argv))
    by_name = {s.name: dict(zip(s.argv, s.argv[1:])) for s in steps if s.argv is not None}
    assert "--n-pathological 0" in " ".join(steps[1].argv) and by_name["place"]["--scans"] == "normal"
    for method in recipe.ALL_METHODS:
        assert by_name[f"generate-{method}"]["--data"] == "placed"  # the same masks for every method
        assert by_name[f"regenerate-{method}"]["--data"] == "p_train"  # known scans: training brains only
        assert by_name[f"segment-{method}"]["--augmented"] == by_name[f"generate-{method}"]["--out"]
    assert by_name["generate-copy-paste"]["--donors"] == "p_train"


def test_smoke_profile_end_to_end(tmp_path: Path, capsys) -> None:
    recipe = _load_recipe()
    assert recipe.main(["--profile", "smoke", "--workdir", str(tmp_path), "--in-process"]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    methods = recipe.available_methods(recipe.PROFILES["smoke"])
    assert {"lefusion", "lesion-ddpm", "copy-paste", "handcrafted"} <= set(methods)
    assert "| real only |" in report and "| synthetic only | Lesion-DDPM |" in report and "| real + synthetic | LeFusion |" in report
    for method in methods:
        scores = json.loads((tmp_path / "recon_scores" / method / "reconstruction.json").read_text())
        assert scores["cases"] >= 1 and 0 <= scores["ms_ssim"] <= 1
    test = set((tmp_path / "real" / "test.txt").read_text().split())
    assert test and not test & {p.name.removesuffix(".nii.gz") for p in (tmp_path / "p_train" / "images").iterdir()}
    # inpainting keeps the background: near-perfect MS-SSIM; Lesion-DDPM regenerates the whole brain
    lefusion = json.loads((tmp_path / "recon_scores" / "lefusion" / "reconstruction.json").read_text())
    lesion_ddpm = json.loads((tmp_path / "recon_scores" / "lesion-ddpm" / "reconstruction.json").read_text())
    assert lefusion["ms_ssim"] > lesion_ddpm["ms_ssim"]
    capsys.readouterr()
    assert recipe.main(["--profile", "smoke", "--workdir", str(tmp_path), "--in-process"]) == 0  # resumes: nothing runs again
    assert "done in an earlier run" in capsys.readouterr().out
