"""Optional dependencies: the core (train, generate, masks) installs without the evaluation stack;
`pip install 'lefusion[eval]'` adds MONAI, scikit-image, matplotlib and einops; `pip install
'lefusion[brain]'` adds nilearn (for the MNI152 template the brain phantom is built on)."""

from __future__ import annotations

import importlib

from .errors import LeFusionError

# import name -> the extra that provides it
EXTRAS = {"monai": "eval", "skimage": "eval", "matplotlib": "eval", "einops": "eval", "nilearn": "brain"}


def require_extra(*modules: str) -> None:
    """Raise LeFusionError naming the extra to install when any of `modules` is not importable."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        extras = sorted({EXTRAS.get(m, "eval") for m in missing})
        raise LeFusionError(
            f"this command needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install 'lefusion[{','.join(extras)}]'"
        )
