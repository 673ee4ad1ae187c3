"""The shape of the house, read from the source: dependencies point one way, no import circles,
docs/ARCHITECTURE.md covers every module, and pyflakes finds nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "modelkit", "train", "export", "cli")
ALLOWED = {"runtime": {"runtime"}, "modelkit": {"modelkit", "runtime"},
           "train": {"train", "modelkit", "runtime"}, "export": {"export", "modelkit", "runtime"},
           "cli": set(PACKAGES)}
FORBIDDEN_IN_RUNTIME = ("tensorflow", "keras", "tf2onnx", "onnx")  # onnx: graph building


def modules() -> dict[str, Path]:
    """leukedge module name -> file, for every .py file of the five packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out["leukedge." + ".".join(parts)] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every leukedge module ``name`` imports (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("leukedge")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("leukedge"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {t for t in imports_of(name, path) if t in mods and t != name}
            for name, path in mods.items()}


def test_dependencies_point_one_way():
    wrong = []
    for name, targets in graph().items():
        package = name.split(".")[1]
        for target in targets:
            if target.split(".")[1] not in ALLOWED[package]:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_runtime_never_imports_the_training_stack():
    offenders = []
    for name, path in modules().items():
        if name.split(".")[1] != "runtime":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IN_RUNTIME]
    assert offenders == []


def _cycle(g: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(g):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_circles():
    g = graph()
    # A package's own __init__ re-exporting its modules is not a circle between ideas.
    for name in list(g):
        g[name] = {t for t in g[name] if not name.startswith(t + ".")}
    assert _cycle(g) == []


def test_the_architecture_doc_names_every_module():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(ROOT)) for p in modules().values()
               if p.name != "__init__.py" and str(p.relative_to(ROOT)) not in doc]
    assert missing == []


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_stay_small(package):
    big = [(str(p.relative_to(ROOT)), n) for p in (ROOT / package).rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 330]
    assert big == []


def test_no_undefined_names_or_unused_imports():
    """pyflakes over the packages, bench/ and tests/: an undefined name is a crash waiting on a
    path no other test takes (a refused INT8 child once raised NameError instead of its hint);
    an unused import is a dependency nobody needs. Lines marked ``# noqa`` are deliberate."""
    pytest.importorskip("pyflakes", reason="pyflakes comes with the [dev] extra")
    from pyflakes.api import checkPath
    from pyflakes.reporter import Reporter

    class Collect(Reporter):
        def __init__(self):
            self.found = []

        def unexpectedError(self, filename, msg):
            self.found.append(f"{filename}: {msg}")

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.found.append(f"{filename}:{lineno}: {msg}")

        def flake(self, message):
            line = Path(message.filename).read_text(encoding="utf-8").splitlines()[
                message.lineno - 1]
            if "# noqa" not in line:
                self.found.append(str(message))

    reporter = Collect()
    for folder in (*PACKAGES, "bench", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            checkPath(str(path), reporter)
    assert reporter.found == []
