"""House rules of the source tree that a reader should not have to check by eye: layers point one
way, no import cycles, no file past 400 lines. Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lefusion"
MAX_LINES = 400

# io -> data -> models/diffusion -> control/masks -> training/generation -> evaluation/export -> cli.
# Level 0 holds what every layer may use (errors, typed configs, device selection, volumes on disk).
LAYERS: dict[str, int] = {
    "errors": 0, "config": 0, "device": 0, "optional": 0, "io": 0, "sharding": 0,
    "data": 1, "phantoms": 1,
    "models": 2, "diffusion": 2, "checkpoints": 2,
    "control": 3, "masks": 3, "baselines": 3,
    "training": 4, "generation": 4,
    "evaluation": 5, "export": 5,
    "cli": 6, "demo": 6, "jobs": 6, "__init__": 6, "__main__": 6,
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lefusion modules `path` imports (relative imports resolved; `from pkg import sub` -> pkg.sub)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lefusion")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("lefusion"):
                continue
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
            found |= subs or {target}
    return found & known


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    if key not in LAYERS:
        raise AssertionError(f"{module}: not assigned to a layer in {__file__}")
    return LAYERS[key]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) - {name} for name, path in modules.items()}


def test_layers_point_one_way():
    wrong = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_checker_sees_a_violation_and_a_cycle(tmp_path, monkeypatch):
    """The rules above must be able to fail: a fake tree with an upward import and a cycle."""
    fake = tmp_path / "lefusion"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "a.py").write_text("def f():\n    from ..cli import main\nfrom .b import g\n")
    (fake / "data" / "b.py").write_text("from .a import f\n")
    (fake / "cli.py").write_text("")
    monkeypatch.setattr(__import__(__name__, fromlist=["SRC"]), "SRC", fake)
    with pytest.raises(AssertionError, match="lefusion.data.a .layer 1. imports lefusion.cli"):
        test_layers_point_one_way()
    with pytest.raises(AssertionError, match="lefusion.data.a -> lefusion.data.b -> lefusion.data.a"):
        test_no_import_cycles()


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by concern): {long}"
