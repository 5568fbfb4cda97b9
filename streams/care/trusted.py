"""Pydantic models built from values the care rules produced themselves, unvalidated.

The decision step builds several models per event (outputs, task and episode states,
internal requests) from values that are already of the fields' types: validated inputs
(events, stored state, config) or what the rules computed from them. Validating them a
second time was a quarter of the step's cost. :func:`constructor` and :func:`evolve` give
the objects pydantic's constructor and ``model_copy`` give (the same ``__dict__``, in
field order, defaults filled in), without the validation pass.

Validation stays at the boundaries: events, stored state, rules and roster files, and
anything read from a topic are validated as before. Only a model without validators can
be built here (checked once per class), so no rule of a model is ever skipped; field
types and constraints (``AwareDatetime``, ``ge=0``) are what is trusted, and the values
come from validated inputs (every datetime from an aware, validated one).

One difference: ``model_fields_set`` of these objects names every field (one shared set
per class instead of a new set per object, which the garbage collector would scan).
Nothing in the hub reads it; ``model_dump(exclude_unset=True)`` would include defaults.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import date, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_set = object.__setattr__
_new = object.__new__
# BaseModel's slots, set through their descriptors (a third cheaper than setattr by name).
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_IMMUTABLE = (str, int, float, bool, type(None), tuple, frozenset, datetime, date,
              timedelta, Enum)
_DATACLASS_FIELDS: dict[type, frozenset[str]] = {}
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}
"""Class -> its field names (derived from the class: the same for every run)."""


def _all_fields(cls: type[BaseModel]) -> set[str]:
    names = _ALL_FIELDS.get(cls)
    if names is None:
        decorators = cls.__pydantic_decorators__
        if (decorators.validators or decorators.field_validators or
                decorators.root_validators or decorators.model_validators or
                cls.__pydantic_post_init__ is not None or cls.__private_attributes__ or
                cls.model_config.get("extra") == "allow" or cls.__new__ is not _new):
            raise TypeError(f"{cls.__name__} has validators or extras: build it validated")
        names = _ALL_FIELDS[cls] = set(cls.model_fields)
    return names


def constructor(cls: type[M]) -> Callable[..., M]:
    """A keyword-only constructor of ``cls`` that does not validate.

    ``constructor(TaskOutput)(id=..., ...)`` is ``TaskOutput(id=..., ...)`` for values
    already of the fields' types. Unknown or missing required fields raise TypeError
    (Python's own argument check); absent fields take their defaults (a factory is
    called, a mutable default copied, as pydantic does).
    """
    fields_set = _all_fields(cls)
    env: dict[str, Any] = {"_cls": cls, "_new": _new, "_set": _set,
                           "_set_fields_set": _set_fields_set, "_set_extra": _set_extra,
                           "_set_private": _set_private, "_fields_set": fields_set,
                           "_absent": object()}
    params: list[str] = []
    items: list[str] = []
    for i, (name, field) in enumerate(cls.model_fields.items()):
        if not name.isidentifier() or name.startswith("_"):
            raise TypeError(f"{cls.__name__}.{name}: not a plain field name")
        if field.is_required():
            params.append(name)
            items.append(f"{name!r}: {name}")
        elif field.default_factory is not None:
            env[f"_factory{i}"] = field.default_factory
            params.append(f"{name}=_absent")
            items.append(f"{name!r}: _factory{i}() if {name} is _absent else {name}")
        elif isinstance(field.default, _IMMUTABLE):
            env[f"_default{i}"] = field.default
            params.append(f"{name}=_default{i}")
            items.append(f"{name!r}: {name}")
        else:
            env[f"_default{i}"] = field.default
            env["_deepcopy"] = copy.deepcopy
            params.append(f"{name}=_absent")
            items.append(f"{name!r}: _deepcopy(_default{i}) if {name} is _absent else {name}")
    # Generated, as dataclasses generate __init__: binding keyword arguments is then
    # Python's own (C) work, and the dict is built in field order in one expression.
    source = (f"def make(*, {', '.join(params)}):\n"
              "    obj = _new(_cls)\n"
              f"    _set(obj, '__dict__', {{{', '.join(items)}}})\n"
              "    _set_fields_set(obj, _fields_set)\n"
              "    _set_extra(obj, None)\n"
              "    _set_private(obj, None)\n"
              "    return obj\n")
    exec(source, env)  # the source is built above from the class's own field names
    make: Callable[..., M] = env["make"]
    make.__qualname__ = make.__name__ = f"trusted_{cls.__name__}"
    return make


def frozen_instance(cls: type[T], /, **fields: Any) -> T:
    """``cls(**fields)`` for a frozen dataclass (not slotted, no ``__post_init__``) with
    every field given: one dict update instead of its ``__init__``'s ``object.__setattr__``
    per field (a third of the cost; a decision and a request are built per assignment)."""
    names = _DATACLASS_FIELDS.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__") or \
                hasattr(cls, "__slots__"):
            raise TypeError(f"{cls.__name__}: not a plain dataclass")
        names = _DATACLASS_FIELDS[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    if fields.keys() != names:
        raise TypeError(f"{cls.__name__}: every field is needed, and only those")
    obj = _new(cls)
    obj.__dict__.update(fields)
    return obj


def evolve(model: M, /, **changes: Any) -> M:
    """``model.model_copy(update=changes)`` (a shallow copy; ``changes`` are fields).

    Copies the instance's whole ``__dict__``: not for a model caching derived values
    there (a cached_property would be carried over to a copy it does not describe)."""
    cls = type(model)
    # The memo read in line (a copy is made per input and per episode written); the
    # first copy of a class goes through _all_fields' checks.
    fields_set = _ALL_FIELDS.get(cls) or _all_fields(cls)
    obj = _new(cls)
    data = model.__dict__.copy()
    if changes:
        data.update(changes)
    _set(obj, "__dict__", data)
    _set_fields_set(obj, fields_set)
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj
