"""What a study name may be, and safe file names made from any stored one.

A study name becomes part of folder and file names (``hpo-models/NAME-trial-N``)
and of the study database, so the names hpo creates are checked once, at the
edge (the study file's ``name``, ``--study-name`` of the commands that create or
run a study, ``hpo narrow --name``)::

    check_study_name("fashion_mnist-2")     # returns the name
    check_study_name("../escape")          # ValueError naming the value and the rule

Optuna itself allows any name, and a study may have been created by an older
version or by Optuna directly; commands that only read a study accept any name,
and every path built from a name goes through :func:`file_name` and
:func:`path_inside`.
"""

from __future__ import annotations

import re
from pathlib import Path

MAX_LENGTH = 128
"""Longest study name, in characters: it becomes part of file names (255 bytes at most on most systems)."""

STUDY_NAME_RULE = (
    f"use ASCII letters, digits, '.', '_' and '-', starting with a letter or digit, at most {MAX_LENGTH} characters"
)
"""The rule, as error messages state it."""

_VALID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LENGTH - 1}}}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Characters of a value shown in an error message before it is shortened.
_SHOWN = 40


def shown(value: str) -> str:
    """``value`` quoted for a one-line message, shortened when long.

    Parameters
    ----------
    value : str

    Returns
    -------
    str
        ``repr(value)`` (newlines and other control characters escaped), or for a
        value over 40 characters its first 40 quoted, then ``... (N characters)``.
    """
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} characters)"


def check_study_name(name: str) -> str:
    """Return ``name`` if it is a study name hpo may create.

    Parameters
    ----------
    name : str

    Returns
    -------
    str
        ``name`` itself.

    Raises
    ------
    ValueError
        ``name`` breaks the rule (:data:`STUDY_NAME_RULE`); the message shows the
        value (shortened if long) and the rule, on one line.
    """
    if _VALID.fullmatch(name) is None:
        raise ValueError(f"{shown(name)} is not a valid study name; {STUDY_NAME_RULE}")
    return name


def file_name(name: str) -> str:
    """A file-name part made from any study name (one stored by Optuna, say).

    Every character other than an ASCII letter, digit, '.', '_' or '-' becomes
    '_', a leading '.' or '-' too (no hidden files, no option-like names, no
    ``..``), and the result is cut to :data:`MAX_LENGTH` characters.  A name that
    obeys the rule is returned unchanged.

    Parameters
    ----------
    name : str

    Returns
    -------
    str
        Non-empty, at most :data:`MAX_LENGTH` characters, matching the rule.
    """
    safe = _UNSAFE.sub("_", name)[:MAX_LENGTH]
    if not safe[:1].isalnum():
        safe = "_" + safe[1:]
    return safe


def path_inside(folder: str | Path, name: str) -> Path:
    """``folder / name``, checked to stay inside ``folder`` once resolved.

    Parameters
    ----------
    folder : str or Path
        Need not exist yet.
    name : str
        One path component, such as ``f"{file_name(study_name)}-trial-3"``.

    Returns
    -------
    Path
        ``Path(folder) / name``.

    Raises
    ------
    ValueError
        The resolved path is not inside the resolved ``folder`` (``name`` has a
        separator or ``..``, or is a symbolic link that leads elsewhere).
    """
    path = Path(folder) / name
    root = Path(folder).resolve()
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise ValueError(f"{path} leads outside {folder} (to {resolved})")
    return path
