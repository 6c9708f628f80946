"""`Choice`: the base of every enum a config names (mean/variance/loss types, schedules, modes...)."""
from __future__ import annotations

import enum


class Choice(enum.Enum):
    """An enum looked up from its value or name, with an error naming the allowed values."""

    @classmethod
    def from_str(cls, value):
        if isinstance(value, cls):
            return value
        for member in cls:
            if str(value).lower() in (member.value, member.name.lower()):
                return member
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown {cls.__name__} {value!r}; allowed: {allowed}")

    @classmethod
    def values(cls) -> tuple:
        """Every allowed value, in declaration order (what the params schema's enum lists)."""
        return tuple(m.value for m in cls)
