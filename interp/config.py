"""Small validated config dataclasses with ``to_dict`` / ``from_dict``.

Subclasses are ordinary ``@dataclass`` classes that define ``validate()``; ``from_dict`` rejects
unknown fields by name, so a typo in a ``config.json`` is an error rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from interp.errors import ConfigError

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for dataclass configs."""

    def __post_init__(self) -> None:
        self.validate()

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


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    check(value in choices, f"{name} must be one of {list(choices)}, got {value!r}")
