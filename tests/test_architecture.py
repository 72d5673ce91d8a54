"""The layers stay visible: no import cycle (counting imports inside functions), no private
name imported across modules, small modules, and a command line that starts without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "torchinfer"
MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str]]:
    """(imported module, imported name or '') for every import of torchinfer, at any depth."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.split(".")[0] == "torchinfer"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "torchinfer":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "") if sub in known else (target, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _ in _imports(name, path, known):
            # importing a.b.c runs a/__init__ and a/b/__init__ first, except the packages
            # that hold the importing module (they are being imported already)
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and prefix != name and not name.startswith(prefix + "."):
                    graph[name].add(prefix)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_even_inside_functions():
    assert _cycles(_graph()) == []


# The layers, top to bottom: a module may import its own layer and those below it, never one
# above (DESIGN.md; docs/design-notes.md, "Architecture").
LAYERS = (
    ("torchinfer.cli", "torchinfer.__main__"),
    ("torchinfer.tools", "torchinfer.testing"),
    ("torchinfer.serve", "torchinfer.distributed"),
    ("torchinfer.api", "torchinfer.retrieval"),
    ("torchinfer.runtime",),
    ("torchinfer.exporters",),
    ("torchinfer.inspection",),
    ("torchinfer.tasks",),
    ("torchinfer.evaluation",),
    ("torchinfer.vectors",),
    ("torchinfer.runner",),
    ("torchinfer.models",),
    ("torchinfer.datasets",),
    ("torchinfer.manifests",),
    ("torchinfer.storage",),
    ("torchinfer.results", "torchinfer.draw", "torchinfer.verify", "torchinfer.errors",
     "torchinfer.devices", "torchinfer.assets"),
)


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m != "torchinfer" and _layer(m) is None] == []


def test_layers_import_only_downwards():
    upward = sorted(f"{source} -> {target}" for source, targets in _graph().items()
                    for target in targets
                    if source != "torchinfer" and _layer(target) is not None
                    and _layer(source) is not None and _layer(target) < _layer(source))
    assert upward == []


def test_no_private_names_imported_across_modules():
    modules = _modules()
    known = set(modules)
    private = [f"{name}: {target}.{imported}" for name, path in modules.items()
               for target, imported in _imports(name, path, known)
               if imported.startswith("_") and not imported.startswith("__")]
    assert private == []


def test_modules_stay_small():
    big = {name: n for name, path in _modules().items()
           if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert big == {}


def test_help_does_not_import_torch():
    code = ("import sys, io, contextlib\n"
            "from torchinfer.cli.app import run\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    run(['--help'])\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("args", [["--help"], ["predict", "--help"]])
def test_help_is_quick(args):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torchinfer", *args], capture_output=True,
                   timeout=60, check=True)
    elapsed = time.perf_counter() - start
    # a budget of its own for a loaded 2-core machine; the README's figure is measured alone
    assert elapsed < 3.0


# --- task names ---------------------------------------------------------------------------------
# A task is its manifest (manifests/<task>.py) and its implementation (tasks/...): no other
# module spells its name, except the model sources that map an outside format to it (a
# transformers *ForDepthEstimation is a depth model), and the bundled models, their data
# generators and the demo, which name the tasks they show (models/shapes.py, datasets/,
# tools/demo.py). The first four tasks predate the manifests: the other modules that still
# spell their names are listed, to shrink and never grow. A manifest may name the tasks whose
# models its task runs too (embed's ``reads_models_of``: classifiers).
RELATIONS = {"classify": {"manifests/embed.py"}}
TASK_NAME_DEBT = {
    "depth": {"datasets/shapes_depth.py", "models/shapes.py", "tools/demo.py"},
    "embed": {"models/shapes.py", "tools/demo.py"},
    "classify": {"datasets/shapes.py", "evaluation/readers.py",
                 "evaluation/report.py", "exporters/prepare.py", "models/card.py",
                 "models/registry.py", "models/shapes.py", "tasks/heads.py", "tools/demo.py"},
    "segment": {"datasets/shapes.py", "evaluation/readers.py",
                "evaluation/report.py", "exporters/prepare.py", "models/card.py",
                "models/registry.py", "models/shapes.py", "tasks/detect_yolo.py",
                "tasks/heads.py", "tasks/yolo_heads.py", "tools/demo.py"},
    "detect": {"datasets/shapes.py", "evaluation/report.py",
               "exporters/detectors.py", "exporters/multihead.py", "exporters/prepare.py",
               "models/card.py", "models/onnx.py", "models/registry.py", "models/shapes.py",
               "tasks/detect_yolo.py", "tasks/heads.py", "tasks/yolo_heads.py", "tools/demo.py"},
    "multi": {"api.py", "cli/app.py", "cli/multi.py", "cli/predict.py", "exporters/multihead.py",
              "models/shapes.py", "runtime/decoding.py", "tasks/group.py", "tasks/multi_eval.py",
              "tools/demo.py"},
}


def _task_name_literals() -> dict[str, set[str]]:
    """task name -> the modules where it is a string literal (docstrings aside)."""
    from torchinfer.manifests import task_names

    names = set(task_names())
    found: dict[str, set[str]] = {name: set() for name in names}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef))
                and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docs:
                found[node.value].add(path.relative_to(PACKAGE).as_posix())
    return found


def test_a_task_name_is_spelled_in_its_own_modules_only():
    for name, modules in _task_name_literals().items():
        own = {f"manifests/{name}.py", f"tasks/{name}.py", f"tasks/{name}_task.py"}
        elsewhere = {m for m in modules - own if not m.startswith("models/sources/")}
        elsewhere -= RELATIONS.get(name, set())
        listed = TASK_NAME_DEBT.get(name, set())
        assert elsewhere <= listed, (name, sorted(elsewhere - listed))
        assert listed <= elsewhere, f"{name}: no longer in {sorted(listed - elsewhere)}: shrink the list"
