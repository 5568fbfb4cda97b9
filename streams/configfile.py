"""Reading the YAML files ops write (roster, agency directory, rules): one strict loader
and one way to name validation problems.

Pure: text in, data or a list of problem lines out. Problem lines name paths and rules,
never the offending values (a roster or directory may hold names and phone numbers).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like scalars and duplicate-key detection.

    YAML 1.1 (PyYAML's default) reads ``end: 17:00`` as the base-60 integer 1020 and
    ``languages: [no]`` (Norwegian) as ``False``; in an ops file both are silent errors.
    Here only ``true``/``false`` are booleans and integers are plain decimal, so unquoted
    times stay strings and are validated as times.
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # PyYAML keeps the last of two equal keys silently; a doubled ``cap_points`` is a typo
    # ops must hear about.
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key in a mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, what: str) -> tuple[Any, str | None]:
    """``(data, None)``, or ``(None, problem)`` when ``text`` is not YAML: the problem
    names ``what``, the line and column and PyYAML's reason, not the offending text."""
    try:
        return yaml.load(text, Loader=ConfigLoader), None  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "unreadable"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return None, f"{what}: not valid YAML{where}: {problem}"


def _path(loc: tuple[int | str, ...], root: str) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or root


_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field (a typo?)",
}


def validation_problems(exc: ValidationError, root: str) -> list[str]:
    """Pydantic errors -> ``path: message`` lines, built from the location and message
    only: pydantic's ``input`` (the offending value) is deliberately left out. Errors
    without a location (whole-document checks) already name their paths, one per line."""
    problems: list[str] = []
    for err in exc.errors(include_input=False, include_url=False):
        msg = _MESSAGES.get(err["type"], err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if not err["loc"]:
            problems.extend(msg.split("\n"))
        else:
            problems.append(f"{_path(tuple(err['loc']), root)}: {msg}")
    return problems


__all__ = ["ConfigLoader", "load_yaml", "validation_problems"]
