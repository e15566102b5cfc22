"""Boundaries the project keeps: core/ and models/ are Streamlit-free; one OpenCV."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import distributions

from conftest import ROOT

PLAIN_PACKAGES = ("core", "models")


def test_core_and_models_never_import_streamlit_in_source():
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


def test_importing_every_core_and_models_module_loads_no_streamlit():
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
