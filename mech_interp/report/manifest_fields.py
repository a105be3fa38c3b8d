"""The manifest fields the report reads, and what each must hold. A manifest edited by hand or written
by another tool may hold anything: a field of another type is left out (the page shows what is there
without it: the run's directory name for its experiment, the file's time for when it finished, a "-")
and named in a note on the run's page, so that a number where a time belongs never decides which run
is the latest, and no value ends the report."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable


def _text(value: Any) -> bool:
    return isinstance(value, str)


def number(value: Any, whole: bool = False) -> bool:
    """A JSON number (an integer where ``whole``); never a bool, which Python counts as an int."""
    return isinstance(value, int if whole else (int, float)) and not isinstance(value, bool)


def _object(value: Any) -> bool:
    return isinstance(value, dict)


def _time(value: Any) -> bool:
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


# (field, whether a value fits, what is expected); "model.name" is the name in the model section.
# null stands for absent everywhere (git_commit is null outside a git checkout).
FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("experiment", _text, "text"),
    ("study", _text, "text"),
    ("finished_at", _time, "an ISO 8601 time"),
    ("git_commit", _text, "text"),
    ("seconds", number, "a number"),
    ("model_source", _text, "text"),
    ("model", _object, "an object"),
    ("model.name", _text, "text"),
    ("options", _object, "an object"),
    ("config", _object, "an object"),
    ("summary", _object, "an object"),
    ("packages", _object, "an object"),
    ("engine", _object, "an object"),
)
SHOWN_CHARS = 60  # of a value in a note


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def checked(manifest: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``manifest`` without the fields of the wrong type, and one line on each left out."""
    fields, problems = dict(manifest), []
    for name, fits, expected in FIELDS:
        section, _, key = name.rpartition(".")
        holder = fields.get(section) if section else fields
        if not isinstance(holder, dict) or holder.get(key) is None or fits(holder[key]):
            continue
        problems.append(f"{name} is {_shown(holder[key])}, not {expected}")
        if section:
            fields[section] = {k: v for k, v in holder.items() if k != key}
        else:
            del fields[key]
    return fields, problems
