"""Named plug-ins: one registry per kind (key-frame scorers, inference engines, annotation
formats, phantom skins), filled one file per plug-in.

A plug-in is registered in code (``REGISTRY.register("name", obj)``, or as a decorator
``@REGISTRY.register("name")``) or by another installed package through an entry point in
the registry's group (``name = "package.module:object"``), loaded on the first lookup of a
name not registered in code. A name registered in code exists only in the process that
registered it; entry points are seen by every process (``--jobs``, batch workers).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of one ``kind`` (a noun for messages, e.g. "key-frame scorer") by name.

    ``wrap(name, obj) -> T`` turns what is registered (and what an entry point loads)
    into the stored value; the default stores it as it is."""

    def __init__(self, kind: str, entry_point_group: str,
                 wrap: Callable[[str, object], T] | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._wrap = wrap or (lambda name, obj: obj)
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str, obj=None, *, replace: bool = False):
        """Register ``obj`` under ``name`` and return ``obj`` (without ``obj``: a decorator).
        ``ValueError`` for an empty name or one already taken (unless ``replace``)."""
        if obj is None:
            return lambda o: self.register(name, o, replace=replace)
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} name must be a non-empty string, not {name!r}")
        if name in self._items and not replace:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = self._wrap(name, obj)
        return obj

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a no-op when unknown)."""
        self._items.pop(name, None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._items:
                self.register(ep.name, ep.load())

    def reload_entry_points(self) -> None:
        """Look at the installed entry points again on the next lookup."""
        self._entry_points_loaded = False

    def names(self) -> list[str]:
        """Every name known (registered in code and from entry points), sorted."""
        self._load_entry_points()
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The plug-in called ``name``; ``ValueError`` naming the known ones otherwise."""
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        """The plug-ins, sorted by name."""
        return iter([self._items[n] for n in self.names()])
