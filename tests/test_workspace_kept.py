"""Each page declares the session keys it keeps across a reload (a ``KEPT`` beside its state, handed
to the workspace by app.py); components/workspace.py names none of them, and no widget that holds a
value is forgotten across a reload without saying why.

The widgets are read from the source: every call with ``key=`` in pages/, components/ and app.py,
followed through our own functions that pass a key on (``field_widget``, ``model_settings``,
``image_viewer``, ...), so a widget added anywhere is checked without touching this test."""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass

import pytest
from conftest import ROOT

from components.lesson_actions import STEP_KEY_PREFIX
from components.workspace import RESULTS_KEY, Kept

# Streamlit elements whose value may be set through Session State: each must be kept or said not to be.
VALUE_WIDGETS = {"selectbox", "slider", "number_input", "multiselect", "checkbox", "toggle", "radio",
                 "segmented_control", "text_input", "text_area", "select_slider", "color_picker", "date_input",
                 "time_input", "datetime_input", "pills", "feedback", "tabs", "expander", "popover"}
# Elements with a key but no value to keep (Streamlit refuses to set buttons', uploaders' and charts' values).
NO_VALUE = {"button", "download_button", "link_button", "page_link", "form_submit_button", "file_uploader",
            "camera_input", "audio_input", "chat_input", "data_editor", "dataframe", "plotly_chart", "altair_chart",
            "vega_lite_chart", "pydeck_chart", "map", "form", "fragment", "dialog", "empty", "container"}
# Widgets not kept across a reload, each with why. Keys, or (ending in "*") key prefixes.
NOT_KEPT = {
    "data_viewer_show_*": "which channels the Data page shows is kept per image, in channel_visibility",
    "ch_*": "the channel editor edits the dataset's channels, kept with the dataset",
    "rcp.*": "the recipe's widgets are seeded from the recipe, which is kept",
    "open.*": "which recipe steps are expanded: layout, not work",
    "cmp.tab": "which Compare tab is open: layout, not work",
    "cmp.px": "a point prompt being typed; the prompts added are kept (cmp.prompts)",
    "cmp.py": "a point prompt being typed; the prompts added are kept (cmp.prompts)",
    "tr.cur.*": "settings of the model a curation starts from: used once, when the editing starts",
    "res.run": "the run shown lives in the address (?run=): a link, shared by whoever opens it",
    "res.view": "the Results view lives in the address (?view=)",
    "res.measure": "the measurement plotted lives in the address (?measure=)",
    "res.color": "what the saved map is coloured by lives in the address (?color=)",
    "res.f.*": "the saved map's filters live in the address (?batch=, ?condition=, ?cluster=)",
    "res.win.*": "the map's window lives in the address (?window=); its boxes show it",
    "res.sure": "a confirmation to delete a run is asked anew each time",
    "tr.del.*": "which trained model to delete, and the confirmation, are asked anew each time",
    "res.cmp.on": "Compare runs is on while the address holds ?compare=",
    "res.cmp.runs": "the runs compared live in the address (?compare=a,b)",
    "res.cmp.measure": "the measurement compared lives in the address (?measure=)",
    "res.cmp.pick": "the images picked live in the address (?pick=, once per image)",
    "res.image": "the saved image shown lives in the address (?image=)",
    "res.models": "the models whose outlines are drawn live in the address (?model=, repeated)",
    "res.img_batch": "the image browser's batch filter lives in the address (?image_batch=)",
    "res.img_condition": "the image browser's condition filter lives in the address (?image_condition=)",
    "lesson.steps.*": "the lesson's step list: the step lives in the address (?step=) and in lesson.progress",
}
# Our pages' keys: none of these may appear in components/workspace.py.
PAGE_KEY_STARTS = ("cm.", "cmp.", "ex.", "tr.", "pre_", "rcp.", "viewer_image", "data_viewer", "dataset", "recipe",
                   "tune_", "batch_", "channel", "live_preview", "log_hist", "device_choice", "res.")

SOURCES = sorted([ROOT / "app.py", *(ROOT / "pages").glob("*.py"), *(ROOT / "components").glob("*.py")])


def declarations() -> dict[str, Kept]:
    """Every components module's ``KEPT``, by module name."""
    found = {}
    for path in sorted((ROOT / "components").glob("*.py")):
        if "\nKEPT = " in path.read_text():
            module = importlib.import_module(f"components.{path.stem}")
            if isinstance(getattr(module, "KEPT", None), Kept):
                found[path.stem] = module.KEPT
    return found


def kept_by_all() -> Kept:
    union = Kept(state=(RESULTS_KEY,))
    for kept in declarations().values():
        union = union | kept
    return union


def test_every_declaration_is_handed_to_the_workspace_by_the_router():
    app = (ROOT / "app.py").read_text()
    found = declarations()
    assert {"data_state", "preprocess_state", "compare_state", "cellmap_state", "explain_state", "training_state",
            "curation_state"} <= set(found)
    for name in found:
        assert f"{name}.KEPT" in app, f"components/{name}.py declares KEPT but app.py does not hand it to keep()"


def test_workspace_names_no_page_key():
    source = (ROOT / "components" / "workspace.py").read_text()
    union = kept_by_all()
    own = {RESULTS_KEY}
    page_keys = (set(union.state) | set(union.widgets) | set(union.prefixes)) - own
    literals = {node.value for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert not literals & page_keys, sorted(literals & page_keys)
    assert not [s for s in literals if s.startswith(PAGE_KEY_STARTS)], [s for s in literals if s.startswith(PAGE_KEY_STARTS)]
    for name in ("STATE_KEYS", "WIDGET_KEYS", "WIDGET_PREFIXES", "IMAGE_CHOICES"):
        assert name not in source


def test_kept_joins_declarations_and_never_keeps_a_download_button():
    a = Kept(state=("a",), widgets=("a.w", "a.img"), prefixes=("a.set.",), images=("a.img",), filters={"a.w": list})
    b = Kept(state=("b", "a"), widgets=("b.w",), prefixes=("b.set.",))
    both = a | b
    assert both.state == ("a", "b") and both.widgets == ("a.w", "a.img", "b.w") and both.images == ("a.img",)
    assert both.keeps_widget("b.set.x") and both.keeps_widget("a.img") and not both.keeps_widget("c.w")
    assert not both.keeps_widget("a.set.dl.weights.pt")  # a model's Download button among its settings
    assert set(both.filters) == {"a.w"}
    with pytest.raises(ValueError, match="not among the kept widgets"):
        Kept(widgets=("x",), images=("y",))
    with pytest.raises(ValueError, match="not among the kept widgets"):
        Kept(filters={"y": list})


def test_compare_drops_restored_models_no_longer_known():
    from components.compare_state import KEPT

    assert KEPT.filters["cmp.models"](["classical", "no-such-model"]) == ["classical"]


# ---- every widget that holds a value, read from the source ------------------------------------------------------


class Param(str):
    """A part of a key that is a parameter of the function being read: its callers give it."""


DYNAMIC = object()  # a part of a key known only at run time (an image's name, a loop variable)


@dataclass
class Module:
    name: str
    tree: ast.Module
    defs: dict[str, list[ast.FunctionDef]]
    assigned: dict[str, ast.expr]
    imported: dict[str, str]  # name -> module it comes from


def _params(fn: ast.FunctionDef) -> set[str]:
    args = fn.args
    return {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg) if a is not None}


def _modules() -> dict[str, Module]:
    out = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        defs: dict[str, list] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                defs.setdefault(node.name, []).append(node)
        assigned = {n.targets[0].id: n.value for n in tree.body
                    if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)}
        imported = {a.asname or a.name: n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                    for a in n.names if n.module}
        out[name] = Module(name, tree, defs, assigned, imported)
    return out


def _calls(node) -> list[ast.Call]:
    """The calls in ``node``'s own body, not in the functions defined inside it."""
    found, todo = [], list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(child, ast.Call):
            found.append(child)
        todo.extend(ast.iter_child_nodes(child))
    return sorted(found, key=lambda c: (c.lineno, c.col_offset))


def _inner_defs(node) -> list[ast.FunctionDef]:
    found, todo = [], list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        if isinstance(child, ast.FunctionDef):
            found.append(child)
        else:
            todo.extend(ast.iter_child_nodes(child))
    return found


def _assigned_in(fn: ast.FunctionDef, name: str) -> list[ast.expr]:
    return [n.value for n in _calls_and_assigns(fn) if isinstance(n, ast.Assign) and len(n.targets) == 1
            and isinstance(n.targets[0], ast.Name) and n.targets[0].id == name]


def _calls_and_assigns(node) -> list[ast.AST]:
    found, todo = [], list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        found.append(child)
        todo.extend(ast.iter_child_nodes(child))
    return found


# A scope: the function being read and what its parameters were given (innermost first).
Scopes = tuple[tuple[ast.FunctionDef, dict], ...]


class WidgetScan:
    """The keys (or key prefixes) of every value widget drawn by our code."""

    def __init__(self) -> None:
        self.modules = _modules()
        self.found: dict[tuple[str, bool], str] = {}  # (key or prefix, exact) -> where
        self.problems: list[str] = []
        self._seen: set = set()

    def run(self) -> WidgetScan:
        for module in self.modules.values():
            self._scan(module, module.tree, (), ())
        return self

    # -- names --
    def _ours(self, module: Module, name: str | None) -> list[tuple[Module, ast.FunctionDef]]:
        if name in module.defs:
            return [(module, d) for d in module.defs[name]]
        source = module.imported.get(name)
        if source in self.modules and name in self.modules[source].defs:
            return [(self.modules[source], d) for d in self.modules[source].defs[name]]
        return []

    def _is_custom_component(self, module: Module, name: str) -> bool:
        value = module.assigned.get(name)
        return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                and value.func.attr in ("component", "declare_component"))

    # -- values: a list of parts, each a string, a Param or DYNAMIC --
    def _resolve(self, expr, module: Module, scopes: Scopes, depth: int = 0) -> list:
        if depth > 8:
            return [DYNAMIC]
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if isinstance(expr, ast.JoinedStr):
            parts = []
            for value in expr.values:
                if isinstance(value, ast.Constant):
                    parts.append(value.value)
                elif value.conversion == -1 and value.format_spec is None:
                    parts += self._resolve(value.value, module, scopes, depth + 1)
                else:
                    parts.append(DYNAMIC)
            return parts
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self._resolve(expr.left, module, scopes, depth + 1) + self._resolve(expr.right, module, scopes,
                                                                                       depth + 1)
        if isinstance(expr, ast.Name):
            for i, (fn, env) in enumerate(scopes):
                if expr.id in env:
                    return env[expr.id]
                if expr.id in _params(fn):
                    return [Param(expr.id)]
                local = _assigned_in(fn, expr.id)
                if len(local) == 1:
                    return self._resolve(local[0], module, scopes[i:], depth + 1)
                if local:
                    return [DYNAMIC]
            if expr.id in module.assigned:
                return self._resolve(module.assigned[expr.id], module, (), depth + 1)
            source = self.modules.get(module.imported.get(expr.id, ""))
            if source is not None and expr.id in source.assigned:  # a constant of another module of ours
                return self._resolve(source.assigned[expr.id], source, (), depth + 1)
            return [DYNAMIC]
        if isinstance(expr, ast.Attribute) and expr.attr == "key" and isinstance(expr.value, ast.Name) \
                and expr.value.id == "ctx":
            return [STEP_KEY_PREFIX, DYNAMIC]  # a lesson step's StepContext.key: "ls.<lesson>.<step>."
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
            # a function of ours that only makes a key (e.g. recipe_panel._key), or gives back the key it
            # was passed after seeding its value (e.g. lesson_images._seed)
            for where, g in self._ours(module, expr.func.id):
                body = [s for s in g.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                last = body[-1] if body else None
                if not isinstance(last, ast.Return) or last.value is None:
                    continue
                returns_param = isinstance(last.value, ast.Name) and last.value.id in _params(g)
                if len(body) == 1 or returns_param:
                    bound = self._bind(g, expr, module, scopes, depth)
                    return self._resolve(last.value, where, ((g, bound),), depth + 1)
        return [DYNAMIC]

    def _bind(self, g: ast.FunctionDef, call: ast.Call, module: Module, scopes: Scopes, depth: int) -> dict:
        """g's parameters -> what ``call`` passes them (or their defaults)."""
        positional = [a.arg for a in (*g.args.posonlyargs, *g.args.args)]
        defaults = dict(zip(positional[len(positional) - len(g.args.defaults):], g.args.defaults, strict=True))
        defaults |= {a.arg: d for a, d in zip(g.args.kwonlyargs, g.args.kw_defaults, strict=True) if d is not None}
        bound = {name: self._resolve(default, module, (), depth + 1) for name, default in defaults.items()}
        for name, arg in zip(positional, call.args, strict=False):
            if not isinstance(arg, ast.Starred):
                bound[name] = self._resolve(arg, module, scopes, depth + 1)
        for kw in call.keywords:
            if kw.arg is not None:
                bound[kw.arg] = self._resolve(kw.value, module, scopes, depth + 1)
        return bound

    # -- calls --
    def _scan(self, module: Module, node, scopes: Scopes, stack: tuple) -> None:
        for call in _calls(node):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            where = f"{module.name}:{call.lineno}"
            ours = [] if name in VALUE_WIDGETS | NO_VALUE and isinstance(func, ast.Attribute) else self._ours(module, name)
            for g_module, g in ours:  # a function of ours: read it with what this call passes (often the key)
                bound = self._bind(g, call, module, scopes, 0)
                memo = (id(g), repr(sorted(bound.items())))
                if memo not in self._seen and len(stack) < 6:
                    self._seen.add(memo)
                    self._scan(g_module, g, ((g, bound),), (*stack, where))
            key = next((kw.value for kw in call.keywords if kw.arg == "key"), None)
            if ours or key is None:
                continue
            parts = self._resolve(key, module, scopes)
            if name in VALUE_WIDGETS or name == "dict":  # dict(key=...): a widget's keywords, spread into it
                self._found(parts, where, stack)
            elif name in NO_VALUE or (isinstance(func, ast.Name) and self._is_custom_component(module, name)):
                continue
            elif parts and isinstance(parts[0], str) and not isinstance(parts[0], Param):
                self.problems.append(f"{where}: {name}(key={ast.unparse(key)}): is it a widget with a value? "
                                     "Add it to VALUE_WIDGETS or NO_VALUE")
        for inner in _inner_defs(node):  # functions defined here (closures see this scope)
            self._scan(module, inner, ((inner, {}), *scopes), stack)

    def _found(self, parts: list, where: str, stack: tuple) -> None:
        if not parts or isinstance(parts[0], Param):
            return  # a key the function's callers give: read at each call
        if parts[0] is DYNAMIC:
            self.problems.append(f"{where}: a widget key this test cannot read")
            return
        text = ""
        for part in parts:
            if not isinstance(part, str) or isinstance(part, Param):
                break
            text += part
        exact = all(isinstance(p, str) and not isinstance(p, Param) for p in parts)
        self.found.setdefault((text, exact), " <- ".join((where, *reversed(stack))))


def _not_kept(key: str) -> bool:
    return key in NOT_KEPT or any(key.startswith(p[:-1]) for p in NOT_KEPT if p.endswith("*"))


def _covered(kept: Kept, key: str, exact: bool) -> bool:
    if _not_kept(key):
        return True
    if exact:
        return kept.keeps_widget(key)
    return key.startswith(kept.prefixes)  # every key under this prefix is kept


@pytest.fixture(scope="module")
def scan() -> WidgetScan:
    return WidgetScan().run()


def test_the_source_scan_reads_every_widget_key(scan):
    assert not scan.problems, "\n".join(scan.problems)
    keys = {k for k, _ in scan.found}
    # the scan follows keys through our functions: a few it must find that way
    assert {"cm.method", "cmp.models", "viewer_image", "data_viewer_gt", "tr.name"} <= keys  # field_widget, model_picker
    assert {"cmp.set.", "ex.set.", "cm.feat.", "tr.fam.", "rcp.", "data_viewer_show_", "ch_"} <= keys, sorted(keys)
    assert len(scan.found) >= 60


def test_every_widget_with_a_value_is_kept_across_a_reload_or_said_not_to_be(scan):
    kept = kept_by_all()
    forgotten = {f"{key}{'' if exact else '*'}  ({where})" for (key, exact), where in scan.found.items()
                 if not _covered(kept, key, exact)}
    assert not forgotten, ("widgets no page declares as kept: add each to its page's KEPT (components/*_state.py) "
                           "or to NOT_KEPT here with why:\n" + "\n".join(sorted(forgotten)))


def test_what_is_said_not_kept_is_still_drawn_and_not_also_kept(scan):
    kept = kept_by_all()
    for entry in NOT_KEPT:
        key = entry.removesuffix("*")
        assert any(k.startswith(key) if entry.endswith("*") else k == key for k, _ in scan.found), f"{entry}: stale"
        assert not kept.keeps_widget(key) and not key.startswith(kept.prefixes), f"{entry} is kept after all"


# ---- the declarations at work -------------------------------------------------------------------------------------


def test_the_router_keeps_every_declaration_and_a_reload_cleans_what_they_say():
    """app.py hands every page's KEPT to the workspace; a restore drops an image gone and models no
    longer known (Compare's filter), whatever page the link names."""
    from streamlit.testing.v1 import AppTest

    from components.workspace import kept_keys, workspace_store

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    union = kept_by_all()
    assert (set(kept_keys().state), set(kept_keys().widgets), set(kept_keys().prefixes), set(kept_keys().images),
            set(kept_keys().filters)) == (set(union.state), set(union.widgets), set(union.prefixes), set(union.images),
                                          {"cmp.models"})
    ws = at.query_params["ws"]
    snapshot = workspace_store().load(ws)
    names = at.session_state["dataset"].names
    snapshot["workspace_widgets"] = {"cmp.models": ["classical", "a-model-gone"], "tr.cur_image": "an-image-gone",
                                     "cmp.image": names[1], "cm.k": 7}
    workspace_store().save(ws, snapshot, 1)
    back = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    back.query_params["ws"] = ws
    back.run()
    assert not back.exception, back.exception
    assert back.session_state["cmp.models"] == ["classical"]
    assert "tr.cur_image" not in back.session_state
    assert back.session_state["cmp.image"] == names[1] and back.session_state["cm.k"] == 7
