"""Strict config dataclasses: keys map one-to-one to fields, types are checked.

Every config of the toolkit (features, model, training) is a frozen
dataclass that inherits :class:`StrictConfig`. ``from_dict`` refuses unknown
keys and values of the wrong type, so a typo in a config file is an error and
not a silently ignored setting; ``to_dict`` gives plain JSON-ready values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

C = TypeVar("C", bound="StrictConfig")


class ConfigError(ValueError):
    """A config key or value that does not fit its dataclass."""


def _accepts(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        return isinstance(value, (tuple, list)) and all(_accepts(args[0], v) for v in value)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _coerce(tp: Any, value: Any) -> Any:
    """Normalise JSON-shaped values (lists for tuples, ints for floats)."""
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclasses.dataclass(frozen=True)
class StrictConfig:
    """Base of all configs: strict ``from_dict``, plain ``to_dict``, ``replace`` with checks."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _accepts(hints[f.name], value):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be {hints[f.name]}, got {value!r}")
            object.__setattr__(self, f.name, _coerce(hints[f.name], value))
        self.validate()

    def validate(self) -> None:
        """Check value ranges; subclasses raise `ConfigError`."""

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Build from a dict, refusing unknown keys and wrong types."""
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__} must be given a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (tuples become lists, ready for JSON)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied, checked like ``from_dict``."""
        return type(self).from_dict({**self.to_dict(), **changes})
