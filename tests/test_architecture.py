"""Boundaries the project keeps: the floors core < models < workflows < components < pages < app.py,
each importing only the floors below it (imports inside functions count), no import cycles, core/,
models/ and workflows/ Streamlit-free, one OpenCV."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest
from conftest import ROOT

PLAIN_PACKAGES = ("core", "models", "workflows")
FLOORS = ("core", "models", "workflows", "components", "pages", "app")  # bottom to top
# Which of our floors each floor may import (besides itself; pages may not import other pages).
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "workflows": {"core", "models", "workflows"},
    "components": {"core", "models", "workflows", "components"},
    "pages": {"core", "models", "workflows", "components"},
    "app": {"core", "models", "workflows", "components"},
}
# The one exception: ``python -m core`` runs the command line, which lives a floor above core/.
# core/__main__.py is an entry point that nothing imports, so it does not make core depend on workflows.
EXEMPT = {("core.__main__", "workflows.cli"): "`python -m core` stays an alias of the CLI (scripts and docs use it)"}


def _modules(root: Path) -> dict[str, Path]:
    """Every module of ours under ``root``: dotted name -> file (a package by its __init__.py)."""
    found = {}
    for floor in FLOORS:
        if floor == "app":
            if (root / "app.py").is_file():
                found["app"] = root / "app.py"
            continue
        for path in sorted((root / floor).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(name: str, path: Path, tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports anywhere in it: ``import x``, ``from x import y`` (y a
    module or a name in x), relative imports, at the top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def ours(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out |= {m for t in targets if (m := ours(t)) is not None and m != name}
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> our modules it imports, for every module of every floor under ``root``."""
    modules = _modules(root)
    return {name: _imported(name, path, ast.parse(path.read_text(), str(path)), modules)
            for name, path in modules.items()}


def _floor(module: str) -> str:
    return module.split(".")[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that climbs a floor or crosses between pages, except :data:`EXEMPT`."""
    bad = []
    for module, imports in sorted(graph.items()):
        floor = _floor(module)
        for target in sorted(imports):
            if (module, target) in EXEMPT:
                continue
            if floor == "pages" and _floor(target) == "pages":
                bad.append(f"{module} imports {target} (a page imports another page)")
            elif _floor(target) not in ALLOWED[floor]:
                bad.append(f"{module} imports {target}")
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (Tarjan's strongly
    connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_every_floor_imports_only_the_floors_below_it():
    assert layer_violations(import_graph(ROOT)) == []


def test_no_module_imports_itself_round_a_loop():
    assert import_cycles(import_graph(ROOT)) == []


def test_the_only_exemption_is_the_python_m_core_alias():
    graph = import_graph(ROOT)
    assert graph["core.__main__"] == {"workflows.cli"}
    assert not any("core.__main__" in imports for imports in graph.values())  # an entry point: nothing imports it


def test_the_command_line_is_split_by_subject():
    """workflows/cli/: the parser, input discovery, progress and one module per command group, each
    small, no function defined twice, and __init__ only re-exporting (the CLI was one 846-line file)."""
    files = {p.name: p.read_text() for p in (ROOT / "workflows" / "cli").glob("*.py")}
    assert {"parser.py", "inputs.py", "progress.py", "train_commands.py"} <= files.keys()
    assert {name: text.count("\n") for name, text in files.items() if text.count("\n") > 350} == {}
    defined = [node.name for text in files.values() for node in ast.parse(text).body
               if isinstance(node, ast.FunctionDef | ast.ClassDef)]
    assert sorted(name for name in set(defined) if defined.count(name) > 1) == []
    assert "def " not in files["__init__.py"]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for floor in ("core", "models", "workflows", "components", "pages"):
        (tmp_path / floor).mkdir()
        (tmp_path / floor / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(("files", "expected"), [
    ({"core/a.py": "def f():\n    from models import b\n", "models/b.py": ""}, "core.a imports models.b"),
    ({"core/a.py": "import workflows.w\n", "workflows/w.py": ""}, "core.a imports workflows.w"),
    ({"core/a.py": "from components.c import x\n", "components/c.py": "x = 1\n"}, "core.a imports components.c"),
    ({"models/m.py": "from workflows import w\n", "workflows/w.py": ""}, "models.m imports workflows.w"),
    ({"models/m.py": "def f():\n    import components.c\n", "components/c.py": ""},
     "models.m imports components.c"),
    ({"workflows/w.py": "from components.c import x\n", "components/c.py": "x = 1\n"},
     "workflows.w imports components.c"),
    ({"workflows/w.py": "class A:\n    def f(self):\n        from pages import p\n", "pages/p.py": ""},
     "workflows.w imports pages.p"),
    ({"components/c.py": "import pages.p\n", "pages/p.py": ""}, "components.c imports pages.p"),
    ({"pages/p.py": "from . import q\n", "pages/q.py": ""}, "pages.p imports pages.q (a page imports another page)"),
    ({"pages/p.py": "from pages.q import x\n", "pages/q.py": "x = 1\n"},
     "pages.p imports pages.q (a page imports another page)"),
])
def test_each_rule_reports_a_forbidden_import_added_to_a_tree(tmp_path, files, expected):
    assert layer_violations(import_graph(_tree(tmp_path, files))) == [expected]


def test_allowed_imports_of_a_tree_are_not_reported(tmp_path):
    tree = _tree(tmp_path, {"core/a.py": "import numpy\nfrom . import b\n", "core/b.py": "",
                            "models/m.py": "from core.a import x\n", "workflows/w.py": "import models.m\n",
                            "components/c.py": "from workflows import w\n", "pages/p.py": "import components.c\n"})
    graph = import_graph(tree)
    assert graph["core.a"] == {"core.b"} and graph["pages.p"] == {"components.c"}
    assert layer_violations(graph) == [] and import_cycles(graph) == []


def test_a_cycle_inside_one_floor_is_reported_even_through_a_function(tmp_path):
    tree = _tree(tmp_path, {"core/a.py": "from core.b import x\n", "core/b.py": "def f():\n    from core import c\n",
                            "core/c.py": "import core.a\n", "core/d.py": "import core.a\n"})
    assert import_cycles(import_graph(tree)) == [["core.a", "core.b", "core.c"]]


def test_plain_floors_never_import_streamlit_in_source():
    offenders = []
    for pkg in PLAIN_PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []


def test_importing_every_plain_module_loads_no_streamlit():
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for pkg in PLAIN_PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "__main__.py"
    ]
    code = "import sys, importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_exactly_one_opencv_distribution():
    names = sorted({d.metadata["Name"].lower() for d in distributions() if d.metadata["Name"].lower().startswith("opencv")})
    assert names == ["opencv-python-headless"]


def test_config_hides_tracebacks_and_protects_uploads():
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["enableXsrfProtection"] is True
    assert cfg["client"]["showErrorDetails"] == "none"
    assert cfg["browser"]["gatherUsageStats"] is False
    assert 0 < cfg["server"]["maxUploadSize"] <= 4096


def test_config_skips_the_full_garbage_collection_after_every_run():
    """Streamlit's default gc.collect(2) after each run held the GIL while a slider's result was
    being sent: 130-200 ms of every slider move on the Preprocess page (docs/speed.md)."""
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["runner"]["postScriptGC"] is False


def test_config_turns_the_file_watcher_off():
    """With a watcher, the server used a whole core for as long as a page was open (watchdog over
    the whole tree, .venv included), which doubled slider response times (docs/speed.md)."""
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["fileWatcherType"] == "none"


def test_every_streamlit_cache_says_what_the_user_sees():
    """A bare ``@st.cache_resource`` shows "Running shared_array_ids()." on the page the first time:
    a code name. Each cache either shows nothing or a sentence."""
    bare = []
    for path in [*(ROOT / "components").rglob("*.py"), *(ROOT / "pages").rglob("*.py"), ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            for deco in getattr(node, "decorator_list", []):
                call = deco if isinstance(deco, ast.Call) else None
                target = (call.func if call else deco)
                if isinstance(target, ast.Attribute) and target.attr in ("cache_resource", "cache_data"):
                    if call is None or not any(k.arg == "show_spinner" for k in call.keywords):
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert bare == []


def test_every_download_goes_through_the_one_download_button():
    """``components.downloads.download_button`` never reruns the app on a click and says why a file
    could not be made; a plain ``st.download_button`` elsewhere would bring both failures back."""
    plain = []
    for path in [*(ROOT / "components").rglob("*.py"), *(ROOT / "pages").rglob("*.py"), ROOT / "app.py"]:
        if path.name == "downloads.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "download_button":
                plain.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert plain == []
