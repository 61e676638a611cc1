"""The import contract between the rooms of the house (DESIGN.md), checked over the AST.

Every ``.py`` file of every room is parsed; each import it makes (at module level or inside a
function, absolute or relative, ``importlib.import_module("faceedit.x")`` and
``__import__("faceedit.x")`` with a literal name, and literal ``"faceedit.x"`` module names
kept in a table for lazy re-exports) names the room it reaches. A room may reach only itself,
rooms on a lower floor, and third-party packages; ``alignment`` may reach only ``core``.
There is no list of exceptions. :data:`SCRIPTS` names the folders of scripts kept inside a room
that are no package (no ``__init__.py``, not in setup.cfg): they are not installed and, like
``examples/``, may use the whole package.
"""
from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Rooms from the ground floor up: folder -> floor. ``faceedit`` is the front door.
FLOORS = {"core": 0, "networks": 1, "checkpoints": 2, "alignment": 3, "metrics": 4, "inversion": 5,
          "editing": 6, "training": 7, "bench": 8, "faceedit": 9}
#: Folders of scripts inside a room: not packages, not installed, not bound by the floors.
SCRIPTS = ("bench/scripts",)
#: Rooms whose allowance is narrower than "every lower floor".
ONLY = {"alignment": {"core"}}

_MODULE_NAME = re.compile(r"faceedit(\.[A-Za-z_][A-Za-z0-9_]*)+")


def room_of(module: str) -> str | None:
    """``faceedit.inversion.latent`` -> ``inversion``; ``faceedit.cli`` -> ``faceedit``; third party -> None."""
    parts = module.split(".")
    if parts[0] != "faceedit":
        return None
    if len(parts) > 1 and parts[1] in FLOORS and parts[1] != "faceedit":
        return parts[1]
    return "faceedit"


def _package_of(path: Path, root: Path) -> list:
    """The dotted package a file lives in, as installed (``training/pack.py`` -> faceedit.training)."""
    rel = path.relative_to(root).parts
    room = rel[0]
    pkg = ["faceedit"] if room == "faceedit" else ["faceedit", room]
    return pkg + list(rel[1:-1])


def is_module(root: Path, name: str) -> bool:
    """Whether the dotted ``faceedit...`` name is a module or package of the tree at ``root``."""
    parts = name.split(".")[1:]
    room = room_of(name)
    if room != "faceedit":
        parts = parts[1:]
    base = root.joinpath(room, *parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(path: Path, root: Path) -> list:
    """``(line, module)`` for every import of ``path``, relative ones resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path, root)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                if node.level - 1 >= len(package):
                    base = []
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x, y: each name may be a module
                    found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
                else:
                    found.append((node.lineno, mod))
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and _MODULE_NAME.fullmatch(node.value) and is_module(root, node.value):
            found.append((node.lineno, node.value))  # a module name kept for a lazy import
    return found


def violations(root: Path, floors: dict = FLOORS, only: dict = ONLY, scripts=SCRIPTS) -> list:
    """Every import in ``root``'s rooms that reaches a room it may not, as readable lines."""
    out = []
    for room, floor in floors.items():
        folder = root / room
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            if any(p.startswith(".") for p in path.relative_to(root).parts):
                continue
            if any(path.is_relative_to(root / s) for s in scripts):
                continue
            for line, module in imported_modules(path, root):
                target = room_of(module)
                if target is None or target == room:
                    continue
                allowed = only.get(room)
                ok = target in allowed if allowed is not None else floors[target] < floor
                if not ok:
                    out.append(f"{path.relative_to(root)}:{line}: {room} (floor {floor}) imports {module} "
                               f"({target}, floor {floors[target]})")
    return out


def test_no_room_imports_upward():
    bad = violations(ROOT)
    assert not bad, "imports against the floors of DESIGN.md:\n" + "\n".join(bad)


def test_every_room_is_checked():
    """Every room named in setup.cfg's package_dir is on a floor here (a new room cannot escape the contract)."""
    cfg = (ROOT / "setup.cfg").read_text()
    block = cfg.split("package_dir =", 1)[1].split("packages =", 1)[0]
    folders = set(re.findall(r"=\s*([A-Za-z_]+)\s*$", block, re.M))
    assert folders == set(FLOORS), folders ^ set(FLOORS)
    for s in SCRIPTS:  # a scripts folder stays out of the package, or the floors would have to bind it
        assert not (ROOT / s / "__init__.py").exists() and s.replace("/", ".") not in cfg, s


def _tree(tmp_path, files: dict) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp_path


@pytest.mark.parametrize("rel, text", [
    ("networks/a.py", "from faceedit.checkpoints import registry\n"),
    ("networks/a.py", "def f():\n    import faceedit.inversion.latent\n"),
    ("training/a.py", "def f():\n    from faceedit.imageio import load_image\n"),
    ("training/sub/a.py", "from ... import device\n"),
    ("editing/a.py", "import importlib\nm = importlib.import_module('faceedit.training.pack')\n"),
    ("inversion/a.py", "_API = {'x': 'faceedit.editing.apply', 'y': 'faceedit.latent'}\n"),
    ("alignment/a.py", "from faceedit.networks import images\n"),
    ("core/a.py", "from faceedit.networks.layers import x\n"),
    ("metrics/a.py", "from faceedit.metrics import x\nfrom faceedit.inversion import y\n"),
])
def test_checker_catches_an_upward_import(tmp_path, rel, text):
    root = _tree(tmp_path, {rel: text, "editing/apply.py": ""})
    bad = violations(root)
    assert len(bad) == 1 and bad[0].startswith(rel), bad


def test_checker_skips_script_folders_but_not_subpackages(tmp_path):
    """``bench/scripts/x.py`` may import the front door; ``bench/sub/a.py`` may not."""
    root = _tree(tmp_path, {
        "bench/scripts/trace.py": "from faceedit import Pipeline\n",
        "bench/sub/a.py": "from faceedit.pipeline import Pipeline\n",
    })
    bad = violations(root)
    assert len(bad) == 1 and bad[0].startswith("bench/sub/a.py"), bad


def test_checker_allows_downward_and_own_room(tmp_path):
    root = _tree(tmp_path, {
        "training/a.py": "from . import b\nfrom .b import c\nfrom faceedit.core.device import resolve_device\n"
                         "import numpy\n",
        "training/b.py": "def f():\n    from faceedit.editing import apply\n",
        "alignment/a.py": "import cv2\nfrom faceedit.core.errors import AlignmentError\nfrom .types import X\n",
        "faceedit/cli/x.py": "from .. import pipeline\nfrom faceedit.training import job\n",
        "core/a.py": "'''Docstring naming faceedit.training is not an import.'''\nimport torch\n",
    })
    assert violations(root) == []


def test_ruff_is_clean():
    """``ruff check`` (configured in pyproject.toml) finds nothing in the repository."""
    import subprocess
    import sys

    import ruff  # noqa: F401 - in the test extras: a missing install fails here instead of skipping
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


# The modules whose public signatures are held to their type hints by mypy: the ground floor and the
# typed values that cross rooms (LoadedModel, InversionOptions). Widen the list as rooms are typed.
MYPY_TARGETS = ("core", "checkpoints/loaded.py", "inversion/options.py")


def test_typed_modules_pass_mypy():
    """``py.typed`` is shipped, so the types of the typed modules must hold (mypy, imports followed
    silently: errors are reported for these files only)."""
    import mypy  # noqa: F401 - in the test extras: a missing install fails here instead of skipping
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                        "--no-error-summary", *MYPY_TARGETS], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
