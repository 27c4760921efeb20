"""Closed JSON schemas for request bodies, checked the way RunPod's v2 API checks them.

Every v2 request schema is closed (runpod-rest-v2.md §1.3): an unknown or v1-named field is a
422 naming it, as are a missing required field, a wrong type, a value out of range or outside
an enum. ``check`` returns the validated value or raises ``problems.invalid`` with one message
per problem, JSON-path-ish like the platform's (``$.gpu: missing property 'pools'``).
Cross-field business rules are not schema: the routes answer those with 400 (§1.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .problems import invalid

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _quoted(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Schema:
    nullable: bool = False

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        """Append what is wrong with ``value`` to ``errors``; return it normalised."""
        raise NotImplementedError


@dataclass
class Str(Schema):
    min_len: int = 0
    max_len: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    nullable: bool = False

    def validate(self, value, path, errors):
        if not isinstance(value, str):
            errors.append(f"{path}: got {_kind(value)}, want string")
        elif self.enum is not None and value not in self.enum:
            errors.append(f"{path}: value must be one of {_quoted(self.enum)}")
        elif len(value) < self.min_len:
            errors.append(f"{path}: minLength: got {len(value)}, want {self.min_len}")
        elif self.max_len is not None and len(value) > self.max_len:
            errors.append(f"{path}: maxLength: got {len(value)}, want {self.max_len}")
        elif self.pattern is not None and not re.search(self.pattern, value):
            errors.append(f"{path}: '{value}' does not match pattern '{self.pattern}'")
        return value


@dataclass
class Num(Schema):
    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[int, ...] | None = None
    nullable: bool = False

    def validate(self, value, path, errors):
        want = "integer" if self.integer else "number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                self.integer and isinstance(value, float) and not value.is_integer()):
            errors.append(f"{path}: got {_kind(value)}, want {want}")
        elif self.enum is not None and value not in self.enum:
            errors.append(f"{path}: value must be one of {_quoted(self.enum)}")
        elif self.minimum is not None and value < self.minimum:
            errors.append(f"{path}: minimum: got {value:g}, want {self.minimum:g}")
        elif self.maximum is not None and value > self.maximum:
            errors.append(f"{path}: maximum: got {value:g}, want {self.maximum:g}")
        elif self.integer:
            return int(value)  # 10.0 is an integer to JSON Schema
        return value


def Int(**kw) -> Num:
    return Num(integer=True, **kw)


@dataclass
class Bool(Schema):
    nullable: bool = False

    def validate(self, value, path, errors):
        if not isinstance(value, bool):
            errors.append(f"{path}: got {_kind(value)}, want boolean")
        return value


@dataclass
class Arr(Schema):
    items: Schema
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False
    nullable: bool = False

    def validate(self, value, path, errors):
        if not isinstance(value, list):
            errors.append(f"{path}: got {_kind(value)}, want array")
            return value
        if len(value) < self.min_items:
            errors.append(f"{path}: minItems: got {len(value)}, want {self.min_items}")
        if self.max_items is not None and len(value) > self.max_items:
            errors.append(f"{path}: maxItems: got {len(value)}, want {self.max_items}")
        value = [_check(self.items, item, f"{path}[{i}]", errors) for i, item in enumerate(value)]
        if self.unique:
            seen: list = []
            for i, item in enumerate(value):
                if item in seen:
                    errors.append(f"{path}: items at {seen.index(item)} and {i} are equal")
                    break
                seen.append(item)
        return value


@dataclass
class StrMap(Schema):
    """An object of string values (``env``)."""

    nullable: bool = False

    def validate(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: got {_kind(value)}, want object")
            return value
        for k, v in value.items():
            if not isinstance(v, str):
                errors.append(f"{path}.{k}: got {_kind(v)}, want string")
        return value


@dataclass
class Obj(Schema):
    """A closed object: only ``props``, with ``required``, at least ``min_props`` keys, and
    for each key of ``dependent`` the key it needs."""

    props: dict[str, Schema]
    required: tuple[str, ...] = ()
    min_props: int = 0
    dependent: dict[str, str] = field(default_factory=dict)  # present key -> key it needs
    nullable: bool = False

    def validate(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: got {_kind(value)}, want object")
            return value
        for name in self.required:
            if name not in value:
                errors.append(f"{path}: missing property '{name}'")
        extra = [k for k in value if k not in self.props]
        if extra:
            errors.append(f"{path}: additional properties {_quoted(extra)} not allowed")
        if len(value) < self.min_props:
            errors.append(f"{path}: minProperties: got {len(value)}, want {self.min_props}")
        for name, needs in self.dependent.items():
            if name in value and needs not in value:
                errors.append(f"{path}: property '{name}' requires property '{needs}'")
        return {name: _check(self.props[name], item, f"{path}.{name}", errors)
                if name in self.props else item for name, item in value.items()}

    def optional(self) -> "Obj":
        """The same object with nothing required (a PATCH body)."""
        return Obj(self.props, (), self.min_props, self.dependent, self.nullable)


@dataclass
class Tagged(Schema):
    """One of several closed objects, chosen by the string in ``tag`` (e.g. ``scaling.type``)."""

    tag: str
    variants: dict[str, Obj]
    nullable: bool = False

    def validate(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: got {_kind(value)}, want object")
            return value
        kind = value.get(self.tag)
        if kind not in self.variants:
            if self.tag not in value:
                errors.append(f"{path}: missing property '{self.tag}'")
            else:
                errors.append(f"{path}.{self.tag}: value must be one of {_quoted(self.variants)}")
            return value
        return self.variants[kind].validate(value, path, errors)


def _check(schema: Schema, value: Any, path: str, errors: list[str]) -> Any:
    if value is None and schema.nullable:
        return None
    return schema.validate(value, path, errors)


def check(schema: Schema, value: Any) -> Any:
    """``value`` if it fits ``schema``; else the 422 problem listing everything that does not."""
    errors: list[str] = []
    value = _check(schema, value, "$", errors)
    if errors:
        raise invalid(errors)
    return value
