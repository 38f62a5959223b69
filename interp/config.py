"""Small validated config dataclasses with ``to_dict`` / ``from_dict``.

Subclasses are ordinary ``@dataclass`` classes that define ``validate()``; ``from_dict`` rejects
unknown fields by name, so a typo in a ``config.json`` is an error rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from interp.errors import ConfigError

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for dataclass configs: field values are checked against their annotations (``int``, ``float``
    (an int is accepted), ``bool``, ``str``, ``X | None``), then :meth:`validate` checks ranges."""

    def __post_init__(self) -> None:
        self._check_types()
        self.validate()

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            allowed = _allowed_types(hints.get(f.name))
            value = getattr(self, f.name)
            if allowed is None or (value is None and type(None) in allowed):
                continue
            ok = any(isinstance(value, t) and not (isinstance(value, bool) and t in (int, float)) for t in allowed) or (
                float in allowed and isinstance(value, int) and not isinstance(value, bool)
            )
            if not ok:
                names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
                raise ConfigError(f"{f.name} must be {names}, got {value!r} ({type(value).__name__})")

    def validate(self) -> None:  # pragma: no cover - overridden
        """Raise :class:`ConfigError` if a field is out of range."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {cls.__name__}: {exc}") from exc

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _allowed_types(annotation: Any) -> tuple[type, ...] | None:
    """The plain types an annotation allows (``int | None`` → ``(int, NoneType)``); None when it is not
    made of int / float / bool / str / None only (such fields are left to ``validate``)."""
    if annotation is None:
        return None
    args = (
        typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or (typing.get_origin(annotation) is typing.Union)
        else (annotation,)
    )
    if all(a in (int, float, bool, str, type(None)) for a in args):
        return tuple(args)
    return None


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def check_sizes(config: Any, bounds: dict[str, int]) -> None:
    """Each field named in ``bounds`` must be in 1..bound (a hand-edited config must not build a model no
    machine holds)."""
    for name, most in bounds.items():
        value = getattr(config, name)
        check(1 <= value <= most, f"{name} must be in 1..{most}, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    check(value in choices, f"{name} must be one of {list(choices)}, got {value!r}")
