"""The layering, enforced: policylens/ is the core, training/ and inference/ depend on
the core only and never on each other, only policylens/cli wires them together, and
no installed package imports the benchmarks.

Every import statement counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("policylens", "training", "inference")
# what each layer may import from the project (the key is a module prefix; longest match wins)
ALLOWED = {
    "policylens": {"policylens"},
    "policylens.cli": {"policylens", "training", "inference"},
    "training": {"policylens", "training"},
    "inference": {"policylens", "inference"},
}
PROJECT_ROOTS = set(PACKAGES) | {"benchmarks", "tests"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def layer_of(module: str) -> str:
    return max((key for key in ALLOWED if module == key or module.startswith(key + ".")), key=len)


def violations(root: Path) -> list[str]:
    """Every import that breaks the layering, as `file:line: a imports b`."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            allowed = ALLOWED[layer_of(module)]
            for line, target in imported_modules(path, module):
                top = target.split(".")[0]
                if top in PROJECT_ROOTS and top not in allowed:
                    out.append(f"{path.relative_to(root)}:{line}: {module} imports {target}")
    return out


def test_the_packages_respect_the_layering() -> None:
    assert violations(REPO) == []


@pytest.mark.parametrize(
    ("where", "line", "expected"),
    [
        ("training/tagger_x.py", "from inference.predictor import Predictor\n", "training.tagger_x imports inference.predictor"),
        ("inference/x.py", "def f():\n    import training.store\n", "inference.x imports training.store"),
        ("policylens/x.py", "def f():\n    from training import store\n", "policylens.x imports training"),
        ("policylens/io2.py", "from inference import batch\n", "policylens.io2 imports inference"),
        ("training/y.py", "from benchmarks import bench_tagger\n", "training.y imports benchmarks"),
    ],
)
def test_a_cross_import_is_caught(tmp_path: Path, where: str, line: str, expected: str) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / where).write_text(line)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].endswith(expected)


def test_the_cli_may_wire_both_layers(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "policylens" / "cli").mkdir()
    (tmp_path / "policylens" / "cli" / "tag.py").write_text("from inference.batch import run_batch\nimport training.store\n")
    (tmp_path / "training" / "z.py").write_text("from . import store\nfrom policylens.io import atomic_write\n")
    assert violations(tmp_path) == []
