"""Optional sign-in: OpenID Connect through Streamlit's ``st.login``, off unless asked for.

Sign-in is on when the server's ``.streamlit/secrets.toml`` has an ``[auth]`` section (Streamlit's
own switch for ``st.login``), or when ``CELLSCOPE_SIGN_IN=1``: then an ``[auth]`` section missing or
incomplete is said on every page, with the file and the fix, and no page opens (a server asked to
sign people in never serves anyone unsigned). ``CELLSCOPE_SIGN_IN=0`` keeps it off whatever the
secrets hold. ``docs/secrets.example.toml`` shows the section.

With sign-in on, every page asks to sign in before it draws or computes anything (the router calls
:func:`sign_in_gate` before the workspace opens); the sidebar names the user and offers *Sign
out*; a run saved and a model trained record their owner (:func:`current_user`: the identity
token's email, else its name, else its subject); only the owner may delete them from the pages
(:func:`delete_refusal`); everyone signed in reads every run and uses every model. With it off,
nothing here draws anything and no owner is recorded: the app is as it was.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

SIGN_IN_ENV = "CELLSCOPE_SIGN_IN"
EXAMPLE = "docs/secrets.example.toml"
SHARED_KEYS = ("redirect_uri", "cookie_secret")  # in [auth] itself, whatever the provider
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")  # in [auth] (one provider) or [auth.NAME]
AUTHLIB_MIN = (1, 3, 2)  # what st.login needs
_ON, _OFF = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SignIn:
    """Whether sign-in is on, the providers offered, and why nobody can sign in ("" when they can)."""

    on: bool
    providers: tuple[str, ...] = ()  # "default" (the provider set in [auth] itself) or the NAMEs of [auth.NAME]
    problem: str = ""


def secrets_files() -> str:
    """Where Streamlit reads secrets from (``secrets.files``), for messages."""
    try:
        files = st.get_option("secrets.files")
    except (StreamlitAPIException, RuntimeError):
        files = [".streamlit/secrets.toml"]
    return " or ".join(f"`{f}`" for f in files)


def _auth_section() -> Mapping[str, Any] | None:
    """The secrets' ``[auth]`` section, None when there are no secrets or no such section."""
    if not st.secrets.load_if_toml_exists():  # no secrets file at all (or an unreadable one): not an error
        return None
    section = st.secrets.get("auth")
    return section if isinstance(section, Mapping) else None


def auth_config(section: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """The providers an ``[auth]`` section offers, and what is wrong with it ("" when nothing)."""
    fix = f"See {EXAMPLE} for a complete section, and restart the server after editing {secrets_files()}."
    missing = [k for k in SHARED_KEYS if not section.get(k)]
    if missing:
        return (), f"The [auth] section lacks {' and '.join(missing)}. {fix}"
    named = {k: v for k, v in section.items() if isinstance(v, Mapping)}
    providers = (["default"] if any(k in section for k in PROVIDER_KEYS) else []) + sorted(named)
    if not providers:
        return (), f"The [auth] section names no identity provider: add {', '.join(PROVIDER_KEYS)}. {fix}"
    for name in providers:
        keys = section if name == "default" else named[name]
        table = "[auth]" if name == "default" else f"[auth.{name}]"
        if "_" in name:
            return (), f"{table}: a provider's name may not contain '_' (Streamlit refuses it). {fix}"
        if lacking := [k for k in PROVIDER_KEYS if not keys.get(k)]:
            return (), f"{table} lacks {', '.join(lacking)}. {fix}"
    return tuple(providers), ""


def sign_in_mode() -> SignIn:
    """On or off (``CELLSCOPE_SIGN_IN``, else whether the secrets have ``[auth]``), and any problem."""
    wanted = os.environ.get(SIGN_IN_ENV, "").strip().lower()
    if wanted in _OFF:
        return SignIn(False)
    if wanted and wanted not in _ON:
        return SignIn(True, problem=f"{SIGN_IN_ENV}={os.environ[SIGN_IN_ENV]!r} is neither on nor off: set it to 1 "
                                    "(sign-in on), 0 (off), or leave it unset (on when the secrets have [auth]).")
    section = _auth_section()
    if section is None:
        if not wanted:
            return SignIn(False)
        return SignIn(True, problem=f"Sign-in is asked for ({SIGN_IN_ENV}={os.environ[SIGN_IN_ENV]}) but no [auth] "
                                    f"section was found in {secrets_files()}. Add one (copy {EXAMPLE} to "
                                    ".streamlit/secrets.toml beside app.py and fill in your identity provider), "
                                    f"then restart the server; or unset {SIGN_IN_ENV} to run without sign-in.")
    providers, problem = auth_config(section)
    return SignIn(True, providers, problem)


def authlib_problem() -> str:
    """Why ``st.login`` cannot run here ("" when it can): it needs the Authlib package."""
    try:
        version = metadata.version("authlib")
    except metadata.PackageNotFoundError:
        version = None
    try:
        recent = version is not None and tuple(int(p) for p in version.split(".")[:3]) >= AUTHLIB_MIN
    except ValueError:  # a pre-release's odd version string: let st.login judge
        recent = True
    if recent:
        return ""
    have = f"Authlib {version} is too old" if version else "the Authlib package is not installed"
    return (f"Signing in needs Authlib {'.'.join(map(str, AUTHLIB_MIN))} or newer, and {have} on this server. "
            "Whoever runs the server: `pip install 'streamlit[auth]'`, then restart it.")


def _identity() -> str | None:
    """The signed-in user's email, else name, else subject (None when nobody is signed in)."""
    info = st.user.to_dict()
    if not info.get("is_logged_in"):
        return None
    return next((str(info[k]) for k in ("email", "name", "sub") if info.get(k)), "signed-in user")


def current_user() -> str | None:
    """Who owns what this session saves: the signed-in user with sign-in on, else None (no owner)."""
    mode = sign_in_mode()
    return _identity() if mode.on and not mode.problem else None


def delete_refusal(owner: str | None, what: str, command: str) -> str:
    """Why this session may not delete a ``what`` (a run, a model) owned by ``owner`` ("" when it
    may): with sign-in on, only its owner may; one without an owner only from ``command``."""
    mode = sign_in_mode()
    if not mode.on or mode.problem:
        return ""
    me = _identity()
    if owner is None:
        return (f"Sign-in is on, and this {what} has no owner (it was saved before sign-in was on, or from the "
                f"command line): only whoever runs the server can delete it, with `{command}`.")
    if owner != me:
        return (f"Only its owner, {owner}, may delete this {what}: with sign-in on, everyone signed in can open "
                f"and use every {what}, but only the one who made it deletes it.")
    return ""


def _sign_in_buttons(providers: tuple[str, ...], place: str) -> None:
    for provider in providers:
        label = "Sign in" if provider == "default" else f"Sign in with {provider}"
        if st.button(label, key=f"auth.sign_in.{place}.{provider}", icon=":material/login:", type="primary",
                     help="Opens your institution's sign-in page; you come back here signed in."):
            try:
                st.login(provider)
            except StreamlitAPIException as exc:  # Streamlit's own check of the [auth] section or of Authlib
                st.error(f"Signing in failed: {exc}")


def sign_in_gate() -> bool:
    """True when the page may run: sign-in is off, or someone is signed in. Otherwise draws why
    not (the problem, or a Sign in button) and returns False: nothing else runs."""
    mode = sign_in_mode()
    if not mode.on:
        return True
    if mode.problem:
        st.title("CellScope")
        st.error(f"Sign-in is not set up on this server. {mode.problem}", icon=":material/lock:")
        return False
    if _identity() is not None:
        return True
    st.title("CellScope")
    st.info("Sign in to use CellScope. What you upload and do stays yours (per tab, kept under its link); saved "
            "runs and trained models are shared with everyone signed in, and only their owner deletes them.",
            icon=":material/lock:")
    if problem := authlib_problem():
        st.error(problem)
        return False
    _sign_in_buttons(mode.providers, "main")
    with st.sidebar:
        st.subheader("Account")
        st.caption("Not signed in.")
        _sign_in_buttons(mode.providers, "side")
    return False


def account_panel() -> None:
    """The sidebar's few lines on who is signed in, with Sign out (nothing when sign-in is off)."""
    mode = sign_in_mode()
    if not mode.on or mode.problem or (me := _identity()) is None:
        return
    st.subheader("Account")
    st.caption(f"Signed in as **{me}**")
    if st.button("Sign out", key="auth.sign_out", icon=":material/logout:",
                 help="Signs you out of CellScope in this browser; your saved runs and models stay."):
        st.logout()
