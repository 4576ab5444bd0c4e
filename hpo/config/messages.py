"""Pydantic's validation errors of a study file as one line per field, in the study file's terms."""

from __future__ import annotations

from collections.abc import Container

from pydantic import ValidationError

_UNION_TAGS = {"fixed", "range", "choices"}


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
