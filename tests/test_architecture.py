"""The layers stay visible: no import cycle (counting imports inside functions), no import from
a layer above (at import time or inside a function, the package root above every layer), no
private name imported across modules, small modules and functions, and a command line that
starts without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "torchinfer"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


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
        found += _imported(node, name, is_package, known)
    return found


def _imported(node: ast.AST, name: str, is_package: bool,
              known: set[str]) -> list[tuple[str, str]]:
    """(imported module, imported name or '') for each torchinfer import of ``node`` (none when
    it is no import), ``node`` being in module ``name``."""
    if isinstance(node, ast.Import):
        return [(a.name, "") for a in node.names if a.name.split(".")[0] == "torchinfer"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "torchinfer":
        return []
    found = []
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


# The layers, top to bottom, each with why it sits where it does: a module may import its own
# layer and those below it, never one above, at import time or inside a function
# (docs/design-notes.md, "Architecture").
LAYERS = (
    (("torchinfer.cli", "torchinfer.__main__"),
     "the command: options parsed, then anything below called; nothing imports it"),
    (("torchinfer.tools", "torchinfer.testing"),
     "what is built on the library for people (bench, demo, viewer, env) and for tests"),
    (("torchinfer.serve", "torchinfer.distributed"),
     "the server and Ray, beside tools: hold predictors that api.load makes, feed them batches"),
    (("torchinfer.api", "torchinfer.retrieval"),
     "the front door: load (which chooses the runtime), inspect, export, evaluate, search"),
    (("torchinfer.runtime",),
     "runs a prepared batch: its backends convert through exporters, verify through tasks"),
    (("torchinfer.exporters",),
     "exports a model and proves the file through the task's own predictor"),
    (("torchinfer.inspection",),
     "counts parameters and MACs; a multi-head model's heads read through tasks.heads"),
    (("torchinfer.tasks",),
     "the predictors: each names its evaluator and streams through the runner"),
    (("torchinfer.evaluation",),
     "scores a predictor object it is handed, knowing no task; reads datasets' files"),
    (("torchinfer.vectors",),
     "a run's vectors as an index, without torch; pictures read through the runner"),
    (("torchinfer.runner",),
     "inputs, decoding, batches, streaming and run folders, for any predictor"),
    (("torchinfer.models",),
     "builds, loads and describes models; task names come from the manifests"),
    (("torchinfer.datasets",),
     "the procedural shapes data, drawn with draw.py"),
    (("torchinfer.manifests",),
     "torch-free task descriptions, read by models and by the command line before torch"),
    (("torchinfer.storage",),
     "object storage: what a URI is, and a run folder kept in step with one"),
    (("torchinfer.results", "torchinfer.draw", "torchinfer.verify", "torchinfer.errors",
      "torchinfer.devices", "torchinfer.assets", "torchinfer._version"),
     "the base: results, drawing, comparisons, errors, devices, bundled files, the version"),
)
# The package root re-exports the front door (ti.load, ti.export...) and so sits above every
# layer: a module that imports it (even ``from .. import __version__``) imports upwards.
PACKAGE_ROOT = "torchinfer"


def _layer(module: str) -> int | None:
    if module == PACKAGE_ROOT:
        return -1
    for rank, (prefixes, _reason) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m != PACKAGE_ROOT and _layer(m) is None] == []


def test_layers_import_only_downwards():
    upward = sorted(f"{source} -> {target}" for source, targets in _graph().items()
                    for target in targets
                    if source != PACKAGE_ROOT and _layer(target) is not None
                    and _layer(source) is not None and _layer(target) < _layer(source))
    assert upward == []


def _upward_imports(name: str, source: str, is_package: bool, known: set[str]) -> list[str]:
    """"module -> target" for each import in ``source`` (module ``name``), at its top or inside
    a function, from a layer above the module's, the package root included."""
    own = _layer(name)
    found = set()
    for node in ast.walk(ast.parse(source)):
        for target, _ in _imported(node, name, is_package, known):
            rank = _layer(target)
            if own is not None and rank is not None and rank < own:
                found.add(f"{name} -> {target}")
    return sorted(found)


def test_no_upward_import_even_at_call_time():
    # the graph above leaves the package root out (importing any module runs it first):
    # this reads every import statement, the ones inside functions too
    known = set(_modules())
    upward = [found for name, path in _modules().items() if name != PACKAGE_ROOT
              for found in _upward_imports(name, path.read_text(encoding="utf-8"),
                                           path.name == "__init__.py", known)]
    assert upward == []


def test_an_upward_import_at_call_time_is_caught():
    known = set(_modules())
    source = ("from ..errors import TorchinferError\n"
              "def version():\n    from .. import __version__\n    return __version__\n"
              "class Exporter:\n    def load(self):\n        from ..api import load\n"
              "        return load\n"
              "async def downwards():\n    from ..models.card import ModelCard\n"
              "    from .._version import __version__\n"
              "    import torchinfer.tasks.heads\n")
    assert _upward_imports("torchinfer.exporters.common", source, False, known) == [
        "torchinfer.exporters.common -> torchinfer",
        "torchinfer.exporters.common -> torchinfer.api"]
    assert _upward_imports("torchinfer.runtime.memo", "import torchinfer\n", False,
                           known) == ["torchinfer.runtime.memo -> torchinfer"]


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


# Functions allowed past MAX_FUNCTION_LINES ("module path:qualified name" -> why it cannot be
# split into parts with names worth giving). To shrink, never to grow.
LONG_FUNCTIONS: dict[str, str] = {}


def _long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """Qualified name (``Class.method``, ``outer.inner``) -> lines, for each function of
    ``source`` longer than ``limit`` lines, its decorators and docstring included."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    lines = (child.end_lineno or child.lineno) - first + 1
                    if lines > limit:
                        found[name] = lines
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_functions_stay_short():
    long = {f"{path.relative_to(PACKAGE).as_posix()}:{name}": n
            for path in sorted(PACKAGE.rglob("*.py"))
            for name, n in _long_functions(path.read_text(encoding="utf-8")).items()}
    assert {k: n for k, n in long.items() if k not in LONG_FUNCTIONS} == {}
    assert set(LONG_FUNCTIONS) <= set(long), "no longer long: shrink LONG_FUNCTIONS"


def test_a_long_function_is_caught():
    def function(name: str, body_lines: int, indent: str = "") -> str:
        body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
        return f"{indent}def {name}():\n{body}"

    source = (function("short", 79) + "@decorated\n" + function("decorated", 79)
              + "class Holder:\n" + function("method", 80, "    ")
              + function("outer", 3) + function("inner", 81, "    "))
    assert _long_functions(source) == {"Holder.method": 81, "decorated": 81, "outer": 86,
                                       "outer.inner": 82}


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
                 "evaluation/report.py", "exporters/prepare.py", "models/card_ultralytics.py",
                 "models/registry.py", "models/shapes.py", "tasks/heads.py", "tools/demo.py"},
    "segment": {"datasets/shapes.py", "evaluation/readers.py",
                "evaluation/report.py", "exporters/prepare.py", "models/card_ultralytics.py",
                "models/registry.py", "models/shapes.py", "tasks/detect_yolo.py",
                "tasks/heads.py", "tasks/yolo_heads.py", "tools/demo.py"},
    "detect": {"datasets/shapes.py", "evaluation/report.py",
               "exporters/detectors.py", "exporters/multihead.py", "exporters/prepare.py",
               "models/card_ultralytics.py", "models/onnx.py", "models/registry.py", "models/shapes.py",
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
