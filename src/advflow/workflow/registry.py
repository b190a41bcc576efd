"""A registry of named plug-ins (the attacks, the detectors): a mapping of name to entry that refuses a second entry
of a name and, asked for an unknown name, says which names it knows."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

Entry = TypeVar("Entry")


class Registry(dict[str, Entry], Generic[Entry]):
    """Entries by their ``name``, in registration order; ``kind`` names them in errors ("attack", "detector")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, entry: Any) -> Any:
        if entry.name in self:
            raise ValueError(f"{self.kind} {entry.name!r} is registered already")
        self[entry.name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        return tuple(self)

    def lookup(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name is a ValueError listing the known ones."""
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self)}") from None
