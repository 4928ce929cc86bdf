"""The core (phantom, train, generate, masks, export) works without the evaluation stack, and an
evaluation command without it says which extra to install. Run in a subprocess in which MONAI,
scikit-image, matplotlib and einops cannot be imported, as after `pip install lefusion`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoEvalStack(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"monai", "skimage", "matplotlib", "einops"}:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoEvalStack())
    import torch
    torch.set_num_threads(1)
    from lefusion.cli import main

    work = sys.argv[1]
    arch = ["--dim", "8", "--dim-mults", "1", "2", "--heads", "2", "--dim-head", "8", "--timesteps", "3"]
    assert main(["phantom", "lung", "--out", f"{work}/lung", "--n-pathological", "3", "--n-normal", "1", "--n-test", "1",
                 "--roi-shape", "8", "16", "16", "--spacing", "2", "2", "2"]) == 0
    assert main(["train", "--data", f"{work}/lung", "--out", f"{work}/run", "--steps", "1", "--batch-size", "1",
                 "--grad-accum", "1", "--roi-shape", "8", "16", "16", *arch]) == 0
    assert main(["generate", "--checkpoint", f"{work}/run/checkpoint", "--data", f"{work}/lung", "--out", f"{work}/gen",
                 "--preset", "1", "--sampler", "ancestral"]) == 0
    assert main(["masks", "sample", "--n", "1", "--diameter", "6", "--out", f"{work}/masks"]) == 0
    assert main(["evaluate", "quality", "--generated", f"{work}/gen", "--real", f"{work}/lung", "--out", f"{work}/q"]) == 2
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"monai", "skimage", "matplotlib", "einops"})
    assert not loaded, loaded
    print("core ok")
    """
)


def test_core_commands_run_without_the_eval_extra(tmp_path: Path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "core ok" in result.stdout
    assert "pip install 'lefusion[eval]'" in result.stderr and "skimage" in result.stderr
