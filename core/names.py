"""Names users give to things that become files (a trained model, a saved run): letters, digits,
'.', '_' and '-', starting with a letter or digit, at most :data:`MAX_NAME` characters, so a name
is a safe file name on every disk and never a path."""

from __future__ import annotations

import re

MAX_NAME = 64  # characters (a longer one may be too long a file name for the disk)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def name_problem(name: str, what: str = "model") -> str:
    """Why ``name`` cannot name a ``what`` ("" if it can), in a sentence."""
    if not (name or "").strip():
        return f"Give the {what} a name (letters, digits, '.', '_' and '-')."
    if not NAME_PATTERN.fullmatch(name):
        return f"A {what} name uses letters, digits, '.', '_' and '-' only."
    if len(name) > MAX_NAME:
        return f"A {what} name has at most {MAX_NAME} characters (this one has {len(name)})."
    return ""
