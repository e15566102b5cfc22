"""Sign-in (components/auth.py) and who sees what: off without an [auth] section (the app as it was,
no owner recorded); on, every page asks to sign in before anything opens, the sidebar names the
user, runs record their owner and only the owner deletes one; a misconfiguration is said with the
file and the fix. Two tabs on different links never see each other's uploads.

No OpenID provider runs here: the signed-in user is AppTest's ``user`` (what ``st.user`` reads),
and ``st.login`` is replaced by a recorder. The redirect to the provider and back, and the
cookie, are Streamlit's and are not tested here."""

from __future__ import annotations

import pytest
import streamlit
from conftest import ROOT, blobs, tiff_bytes
from streamlit.testing.v1 import AppTest

import components.auth as auth
from core.analysis import Analysis, InputFile
from core.runs import list_runs, save_run

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s3cret",
        "client_id": "cellscope", "client_secret": "xyz",
        "server_metadata_url": "https://id.example.org/.well-known/openid-configuration"}
ANN = {"is_logged_in": True, "email": "ann@lab.org", "name": "Ann"}
BOB = {"is_logged_in": True, "email": "bob@lab.org", "name": "Bob"}


@pytest.fixture(autouse=True)
def homes(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv(auth.SIGN_IN_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here: only what a test gives
    return tmp_path


def _app(*, secrets: dict | None = None, user: dict | None = None, page: str | None = None, ws: str | None = None,
         **params) -> AppTest:
    """A new session of the whole app (on ``page``, its address holding ``params``); ``ws``: opened
    on that workspace's link, as a reload of it."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if ws is not None:
        at.query_params["ws"] = ws
    if secrets is not None:
        at.secrets = secrets
    if user is not None:
        at.user = user
    at.run()
    if page:
        at.switch_page(page)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


def _record() -> Analysis:
    return Analysis("segmentation", (InputFile("a", "h1", batch="p1"),), {"recipe": "x"}, {"device": "cpu"})


# ---- the setting ---------------------------------------------------------------------------------------------------

def test_auth_config_names_what_is_missing_and_finds_the_providers():
    assert auth.auth_config(AUTH) == (("default",), "")
    named = {"redirect_uri": "u", "cookie_secret": "c",
             "google": {k: "v" for k in auth.PROVIDER_KEYS}, "okta": {k: "v" for k in auth.PROVIDER_KEYS}}
    assert auth.auth_config(named) == (("google", "okta"), "")
    providers, problem = auth.auth_config({k: v for k, v in AUTH.items() if k != "cookie_secret"})
    assert providers == () and "lacks cookie_secret" in problem and auth.EXAMPLE in problem
    assert "names no identity provider" in auth.auth_config({"redirect_uri": "u", "cookie_secret": "c"})[1]
    lacking = {**named, "okta": {"client_id": "v"}}
    assert "[auth.okta] lacks client_secret, server_metadata_url" in auth.auth_config(lacking)[1]
    assert "may not contain '_'" in auth.auth_config({**named, "my_idp": named["okta"]})[1]


def test_authlib_problem_says_how_to_install_it(monkeypatch):
    def version(name):
        raise auth.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(auth.metadata, "version", version)
    assert "pip install 'streamlit[auth]'" in auth.authlib_problem() and "not installed" in auth.authlib_problem()
    monkeypatch.setattr(auth.metadata, "version", lambda name: "1.2.0")
    assert "Authlib 1.2.0 is too old" in auth.authlib_problem()
    monkeypatch.setattr(auth.metadata, "version", lambda name: "1.6.5")
    assert auth.authlib_problem() == ""


# ---- off: the app as it was ----------------------------------------------------------------------------------------

def test_without_secrets_nothing_asks_to_sign_in_and_no_owner_is_recorded(homes):
    at = _app()  # AppTest's st.user holds an email even so: it must not become an owner
    assert at.session_state["dataset"] is not None and at.query_params.get("ws")
    assert not [b for b in at.button if b.key and b.key.startswith("auth.")]
    assert "Account" not in _texts(at.sidebar.subheader)
    assert not any("Sign in" in t for t in _texts(at.info))

    def saver() -> None:
        from components.save_run import save_run_control
        from core.analysis import Analysis, InputFile

        save_run_control("k", [Analysis("segmentation", (InputFile("a", "h"),), {}, {})], default_name="seg")

    box = AppTest.from_function(saver, default_timeout=60)
    box.run()
    box.button(key="k.save").click().run()
    assert not box.exception, box.exception
    (info,) = list_runs()
    assert info.owner is None


def test_off_switch_wins_over_an_auth_section(monkeypatch):
    monkeypatch.setenv(auth.SIGN_IN_ENV, "0")
    at = _app(secrets={"auth": AUTH}, user={"is_logged_in": False})
    assert at.session_state["dataset"] is not None and not any("Sign in" in t for t in _texts(at.info))


# ---- misconfigured: said, nothing opens ---------------------------------------------------------------------------

def test_sign_in_asked_for_without_an_auth_section_names_the_file_and_the_fix(monkeypatch):
    monkeypatch.setenv(auth.SIGN_IN_ENV, "1")
    at = _app(page="pages/results.py")
    (error,) = _texts(at.error)
    assert "no [auth] section" in error and "secrets.toml" in error and auth.EXAMPLE in error
    assert "unset CELLSCOPE_SIGN_IN" in error
    assert "dataset" not in at.session_state and "ws" not in at.query_params  # no workspace opened
    assert not at.dataframe and not at.file_uploader


def test_a_bad_switch_value_and_an_incomplete_section_are_said(monkeypatch):
    monkeypatch.setenv(auth.SIGN_IN_ENV, "maybe")
    assert "'maybe' is neither on nor off" in _texts(_app().error)[0]
    monkeypatch.delenv(auth.SIGN_IN_ENV)
    at = _app(secrets={"auth": {k: v for k, v in AUTH.items() if k != "redirect_uri"}}, user=ANN)
    assert "lacks redirect_uri" in _texts(at.error)[0] and "dataset" not in at.session_state


# ---- on: the gate, the user, the owner -----------------------------------------------------------------------------

def test_signed_out_every_page_asks_to_sign_in_before_anything_opens(monkeypatch):
    asked = []
    monkeypatch.setattr(auth, "authlib_problem", lambda: "")
    monkeypatch.setattr(streamlit, "login", lambda provider=None: asked.append(provider))
    for page in ("pages/data.py", "pages/train.py", "pages/results.py"):
        at = _app(secrets={"auth": AUTH}, user={"is_logged_in": False}, page=page)
        assert any("Sign in to use CellScope" in t for t in _texts(at.info))
        assert "dataset" not in at.session_state and "ws" not in at.query_params
        assert not at.file_uploader and not at.dataframe and not at.text_input
    at.button(key="auth.sign_in.side.default").click().run()
    assert asked == ["default"]
    at.button(key="auth.sign_in.main.default").click().run()
    assert asked == ["default", "default"] and not at.exception


def test_signed_out_without_authlib_the_page_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(auth, "authlib_problem", lambda: "Signing in needs Authlib: pip install 'streamlit[auth]'")
    at = _app(secrets={"auth": AUTH}, user={"is_logged_in": False})
    assert any("pip install 'streamlit[auth]'" in t for t in _texts(at.error))
    assert not [b for b in at.button if b.key and b.key.startswith("auth.sign_in")]


def test_several_providers_get_a_button_each(monkeypatch):
    monkeypatch.setattr(auth, "authlib_problem", lambda: "")
    keys = {k: "v" for k in auth.PROVIDER_KEYS}
    at = _app(secrets={"auth": {"redirect_uri": "u", "cookie_secret": "c", "google": keys, "okta": keys}},
              user={"is_logged_in": False})
    labels = [b.label for b in at.button if b.key and b.key.startswith("auth.sign_in.main")]
    assert labels == ["Sign in with google", "Sign in with okta"]


def test_signed_in_the_pages_open_the_sidebar_names_the_user_and_sign_out_signs_out():
    at = _app(secrets={"auth": AUTH}, user=ANN)
    assert at.session_state["dataset"] is not None and at.query_params.get("ws")
    assert "Account" in _texts(at.sidebar.subheader)
    assert "Signed in as **ann@lab.org**" in _texts(at.sidebar.caption)
    at.button(key="auth.sign_out").click().run()
    assert not at.exception
    at.run()  # the session after the sign-out: Streamlit forgot the user
    assert any("Sign in to use CellScope" in t for t in _texts(at.info))
    assert not at.file_uploader


def test_a_run_saved_while_signed_in_records_its_owner():
    def saver() -> None:
        from components.save_run import save_run_control
        from core.analysis import Analysis, InputFile

        save_run_control("k", [Analysis("segmentation", (InputFile("a", "h"),), {}, {})], default_name="seg")

    box = AppTest.from_function(saver, default_timeout=60)
    box.secrets = {"auth": AUTH}
    box.user = {"is_logged_in": True, "name": "Carol"}  # no email claim: the name is the owner
    box.run()
    box.button(key="k.save").click().run()
    assert not box.exception, box.exception
    (info,) = list_runs()
    assert info.owner == "Carol"


def test_the_results_list_shows_owners_and_only_the_owner_deletes_a_run(homes):
    save_run("anns-run", [_record()], owner="ann@lab.org")
    save_run("old-run", [_record()])  # saved before sign-in was on: nobody owns it
    bob = _app(secrets={"auth": AUTH}, user=BOB, page="pages/results.py", run="anns-run", view="Files")
    table = bob.dataframe[-1].value
    assert dict(zip(table["name"], table["owner"], strict=True)) == {"anns-run": "ann@lab.org", "old-run": ""}
    assert any("Only its owner, ann@lab.org, may delete this run" in t for t in _texts(bob.info))
    assert not [b for b in bob.button if b.key == "res.delete"] and not [c for c in bob.checkbox if c.key == "res.sure"]
    old = _app(secrets={"auth": AUTH}, user=ANN, page="pages/results.py", run="old-run", view="Files")
    assert any("python -m core runs delete old-run" in t for t in _texts(old.info))
    assert not [b for b in old.button if b.key == "res.delete"]
    ann = _app(secrets={"auth": AUTH}, user=ANN, page="pages/results.py", run="anns-run", view="Files")
    ann.checkbox(key="res.sure").check().run()
    ann.button(key="res.delete").click().run()
    assert not ann.exception and [i.name for i in list_runs()] == ["old-run"]


# ---- who sees what: two tabs on two links --------------------------------------------------------------------------

def _upload(at: AppTest, name: str, seed: int) -> None:
    next(u for u in at.file_uploader if u.label == "Add images").set_value(
        [(f"{name}.tif", tiff_bytes(blobs(seed=seed)), "image/tiff")])
    next(c for c in at.checkbox if c.label == "Replace the current images").set_value(True)
    next(b for b in at.button if b.label == "Load files").click()
    at.run()
    assert not at.exception, at.exception


def test_two_tabs_on_different_links_see_only_their_own_uploads():
    one, two = _app(), _app()
    assert one.query_params["ws"] != two.query_params["ws"]
    _upload(one, "ones-cells", 1)
    _upload(two, "twos-cells", 2)
    one.run()
    assert one.session_state["dataset"].names == ["ones-cells"]
    assert two.session_state["dataset"].names == ["twos-cells"]
    for ws, mine in ((one.query_params["ws"], "ones-cells"), (two.query_params["ws"], "twos-cells")):
        again = _app(ws=ws)  # a reload of each link: its own work, nothing of the other's
        assert again.query_params["ws"] == ws and again.session_state["dataset"].names == [mine]
