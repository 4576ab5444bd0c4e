"""A study file's errors: one line for a file that is not a TOML text file, one line per field for
pydantic's validation errors, in the study file's terms."""

from __future__ import annotations

import tomllib
from collections.abc import Container
from pathlib import Path
from typing import Any

from pydantic import ValidationError

_UNION_TAGS = {"fixed", "range", "choices"}
# What to do instead, said by every line about a file that is no study file.
GIVE_A_STUDY_FILE = "give the path of a study file such as studies/digits.toml"


def read_study_file(path: Path) -> dict[str, Any]:
    """The TOML table of the study file ``path``.

    Raises
    ------
    ValueError
        One line that names ``path``, says what is wrong and what to do: a folder, a missing
        file, one that cannot be read (permissions), a binary file or text that is not UTF-8,
        a byte-order mark, an empty file, or invalid TOML.
    """
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a study file (see the studies/ folder for examples)")
    if path.exists() and not path.is_file():  # a device, a pipe, a socket
        raise ValueError(f"{path}: is not a regular file; give a study file (see the studies/ folder for examples)")
    if not path.is_file():
        raise ValueError(f"{path}: no such study file (see the studies/ folder for examples)")
    try:
        content = path.read_bytes()
    except PermissionError:
        raise ValueError(f"{path}: cannot be read (permission denied); make it readable (chmod u+r) or "
                         f"{GIVE_A_STUDY_FILE}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error}); {GIVE_A_STUDY_FILE}") from None
    nul = content.find(b"\0")
    if nul >= 0:
        raise ValueError(f"{path}: is not a TOML text file (binary data: a NUL byte at offset {nul}); "
                         f"{GIVE_A_STUDY_FILE}")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: is not a TOML text file (byte 0x{content[error.start]:02x} at offset {error.start} "
                         f"is not UTF-8); save it as UTF-8, or {GIVE_A_STUDY_FILE}") from None
    if text.startswith("\ufeff"):
        raise ValueError(f"{path}: starts with a byte-order mark, which TOML does not allow; save it as UTF-8 "
                         "without BOM")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: invalid TOML: {error}; correct it there, or {GIVE_A_STUDY_FILE}") from None
    if not data:
        what = "is empty" if not text.strip() else "holds only comments"
        raise ValueError(f"{path}: {what}; write the study there (name, [budget], [parameters]) or "
                         f"{GIVE_A_STUDY_FILE}")
    return data


def _location(parts: tuple) -> str:
    kept = [str(part) for part in parts if str(part) not in _UNION_TAGS and not _is_internal(str(part))]
    return ".".join(kept)


def _is_internal(part: str) -> bool:
    return part.startswith(("function-", "literal[", "constrained-", "lax-", "strict-")) or part in {
        "float", "int", "bool", "str", "is-instance[Path]", "path",
    }


def field_errors(error: ValidationError, *, searchable: Container[str]) -> list[str]:
    """One line per field in error: ``field.path: reason (got value)``.

    Alternatives of one field (a value that is neither 'he' nor a number, say) are
    joined on one line.  ``searchable``: the names of the parameters that may be
    searched (a table given for another one is named as such).
    """
    messages: dict[str, list[str]] = {}
    for item in error.errors():
        location = _location(item["loc"])
        field = location.rsplit(".", 1)[-1]
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        if item["type"] == "extra_forbidden":
            message = "unknown field; remove it or check its spelling"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "union_tag_invalid":
            message = "this setting cannot be searched over a range; give a value or { choices = [...] }"
        elif item["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = "must be a table"
        elif isinstance(given, dict) and location.startswith("parameters.") and field not in searchable:
            message = f"{message} (got a table; {field} cannot be searched)"
        elif "input" in item and not isinstance(given, dict) and item["type"] != "value_error":
            message = f"{message} (got {given!r})"
        if message not in messages.setdefault(location, []):
            messages[location].append(message)
    return [f"{location}: {' or '.join(reasons)}" if location else " or ".join(reasons)
            for location, reasons in messages.items()]
