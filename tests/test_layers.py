"""The rooms of the package import only downward (the table in the README's architecture section).

Every import statement counts, wherever it stands (inside a function, under TYPE_CHECKING): a lazy
import still ties a lower room to a higher one. A module or folder missing from the table fails the
test, so a new room has to be placed in the order before it can land.
"""

from __future__ import annotations

import ast
from pathlib import Path

import comfy_driver

PACKAGE = Path(comfy_driver.__file__).parent

BASE = {"errors", "confined", "jsontext", "yamltext", "paths", "units"}  # helpers every room may use
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "confined": {"errors"},
    "jsontext": set(),
    "yamltext": {"errors"},
    "paths": {"errors"},
    "units": set(),
    "comfy": BASE,
    "media": BASE,
    "config": BASE | {"comfy"},  # server lists are parsed as targets
    "workflow": BASE | {"comfy", "media"},  # media: workflows embedded in MP4 files
    "models": BASE | {"comfy", "config", "workflow"},
    "publish": BASE | {"config", "media"},
    "sim": BASE | {"comfy", "media", "models"},  # models: which loader reads which models folder
    "pipeline": BASE | {"comfy", "config", "media", "models", "publish", "workflow"},
    "api": BASE | {"comfy", "config", "models", "pipeline", "sim", "workflow"},
    "api_v2": BASE | {"api", "comfy", "models", "pipeline"},
    "cli": BASE | {"__init__", "api", "api_v2", "comfy", "config", "media", "models", "pipeline", "publish", "sim",
                   "workflow"},
    "__init__": BASE | {"api", "api_v2", "comfy", "config", "pipeline", "sim"},
    "data": set(),
}


def room_of(package: Path, module: str) -> str:
    """The room of a dotted module name inside the package: its first part under the package, or
    `__init__` for the package itself and the names its front door defines."""
    parts = module.split(".")[1:]
    if parts and ((package / parts[0]).is_dir() or (package / f"{parts[0]}.py").is_file()):
        return parts[0]
    return "__init__"


def imports_of(package: Path) -> list[tuple[str, str, str]]:
    """(importing room, imported room, 'file:line') for every import between two rooms of the package."""
    name = package.name
    found = []
    for file in sorted(package.rglob("*.py")):
        parts = list(file.relative_to(package.parent).with_suffix("").parts)
        source = room_of(package, ".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the file's own package, up level-1 packages
                    base = ".".join(parts[:len(parts) - node.level] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" for alias in node.names]  # a name may be a module
            else:
                continue
            for target in targets:
                imported = room_of(package, target)
                if (target == name or target.startswith(name + ".")) and imported != source:
                    found.append((source, imported, f"{file.relative_to(package.parent)}:{node.lineno}"))
    return found


def upward(package: Path, allowed: dict[str, set[str]]) -> list[str]:
    """Each import the table does not allow, and each room the table does not place."""
    problems = []
    rooms = {p.stem for p in package.iterdir() if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__")}
    problems += [f"{room}: not placed in the layer table" for room in sorted(rooms - set(allowed))]
    for source, imported, where in imports_of(package):
        if imported not in allowed.get(source, set()):
            problems.append(f"{where}: {source} imports {imported}")
    return problems


def test_the_package_imports_only_downward() -> None:
    assert upward(PACKAGE, MAY_IMPORT) == []


def test_the_walk_sees_the_imports_there_are() -> None:
    """The check above is not vacuous: module-level and lazy imports between rooms are found."""
    pairs = {(source, imported) for source, imported, _ in imports_of(PACKAGE)}
    assert {("pipeline", "comfy"), ("pipeline", "media"), ("config", "yamltext"), ("cli", "api"),
            ("__init__", "api")} <= pairs


def test_an_upward_import_fails(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    for folder in ("config", "media", "pipeline"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("")
    (package / "media" / "probe.py").write_text("from pkg.errors import x\n")
    (package / "config" / "series.py").write_text(
        "import pkg.errors\n"
        "def load():\n"
        "    from pkg.media.probe import probe\n"  # lazy: still an upward import
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..pipeline import plan\n")  # relative
    (package / "pipeline" / "plan.py").write_text("from . import other\nfrom ..config import series\n")
    allowed = {"errors": set(), "__init__": set(), "media": {"errors"}, "config": {"errors"},
               "pipeline": {"config", "media", "errors"}}
    assert upward(package, allowed) == ["pkg/config/series.py:3: config imports media",
                                        "pkg/config/series.py:6: config imports pipeline"]
    (package / "sim").mkdir()
    (package / "sim" / "__init__.py").write_text("")
    assert upward(package, allowed)[0] == "sim: not placed in the layer table"
