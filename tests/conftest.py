"""Shared fixtures. Golden tensors live in ../shared/reference beside the checkout (or $LEFUSION_REFERENCE)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path:
    return Path(os.environ.get("LEFUSION_REFERENCE", REPO.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = _reference_dir()
    if not (path / "README.md").is_file():
        message = f"golden reference files not found at {path} (set LEFUSION_REFERENCE)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the goldens must be there: never pass by skipping
        pytest.skip(message)
    return path


def load_golden(reference_dir: Path, name: str) -> dict:
    return torch.load(reference_dir / name, weights_only=True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny ops on a busy 2-core machine: a second intra-op thread waits for a core far longer
    than the op takes (measured 30x slower), so modules of tiny models run single-threaded
    (`pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_LUNG_ROI = (8, 16, 16)


@pytest.fixture(scope="module")
def tiny_lung(tmp_path_factory) -> Path:
    """A lung phantom of 6 pathological, 2 normal and 1 test ROI of TINY_LUNG_ROI at 2 mm (training tests)."""
    from lefusion.phantoms import write_lung_phantom

    root = tmp_path_factory.mktemp("data") / "lung"
    write_lung_phantom(root, n_pathological=6, n_normal=2, n_test=1, seed=0, roi_shape=TINY_LUNG_ROI, spacing=(2.0, 2.0, 2.0))
    return root


@pytest.fixture(scope="session")
def brain_phantom_2mm(tmp_path_factory) -> Path:
    """A brain phantom at 2 mm (needs nilearn): 2 lesion-free and 3 pathological brains, one held out."""
    pytest.importorskip("nilearn", reason="the brain phantom needs nilearn (pip install 'lefusion[brain]')")
    from lefusion.phantoms.brain import write_brain_phantom

    out = tmp_path_factory.mktemp("brain2mm")
    write_brain_phantom(out, n_normal=2, n_pathological=3, n_test=1, seed=3, spacing=(2.0, 2.0, 2.0))
    return out
