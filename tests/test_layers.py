"""The package's layers point one way, and no module imports itself round a circle.

cli -> experiments -> eval -> training -> base. A module may import from its own layer or a lower
one. Imports inside functions count too: a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "maelab"

# Layer of each top-level module or package of maelab (higher imports lower, never the reverse).
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ("config", "runtime", "rundir", "checkpoint", "distributed", "data", "augment", "augment_dino", "models",
         "visualize"), 0),
    **dict.fromkeys(("methods", "train", "budget", "optim", "tblog"), 1),
    **dict.fromkeys(("eval", "bench", "export"), 2),
    **dict.fromkeys(("experiments", "report"), 3),
    **dict.fromkeys(("cli", "__main__"), 4),
}  # fmt: skip
LAYER_NAMES = ("base", "training", "eval", "experiments", "cli")
FACADE = "maelab"  # maelab/__init__.py re-exports the public API; importing `maelab` alone is allowed


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The maelab modules that ``name`` imports anywhere in its file (resolved to known module names)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from maelab.eval import knn` imports the submodule maelab.eval.knn
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:  # `maelab.config.Config` -> maelab.config
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                found.add(t)
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer() -> None:
    missing = [m for m in all_modules() if m != FACADE and layer_of(m) is None]
    assert not missing, f"add these modules to LAYERS in {Path(__file__).name}: {missing}"


def test_no_module_imports_from_a_higher_layer() -> None:
    wrong = []
    for module, targets in graph().items():
        if module == FACADE:
            continue
        for target in targets:
            if target == FACADE:
                continue
            own, other = layer_of(module), layer_of(target)
            if own is not None and other is not None and other > own:
                wrong.append(f"{module} ({LAYER_NAMES[own]}) imports {target} ({LAYER_NAMES[other]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, iterative colouring)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(edges):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, ()))))
    return None


def test_no_import_cycles() -> None:
    edges = {m: {t for t in ts if t != FACADE} for m, ts in graph().items() if m != FACADE}
    # A package's __init__ importing its own submodules (re-exports) is not a circle with them.
    for m in edges:
        edges[m] = {t for t in edges[m] if not (t.startswith(m + ".") and all_modules()[m].name == "__init__.py")}
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("edges", "expected"),
    [({"a": {"b"}, "b": {"c"}, "c": set()}, None), ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"])],
)
def test_the_cycle_finder_finds_circles(edges: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected


def test_the_layer_check_sees_function_level_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from maelab.cli import main\n    from .data import load_split\n")
    assert imports_of("maelab.models.m", f, {"maelab.cli", "maelab.models.data", "maelab.models"}) == {
        "maelab.cli", "maelab.models.data",
    }  # fmt: skip


def test_no_source_file_is_over_400_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these files (lines): {long}"
