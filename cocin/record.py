"""``Record``: the few things of ``@dataclass`` cocin uses, without its import cost.

``import dataclasses`` pulls in ``inspect`` (and with it ``ast``, ``dis``,
``tokenize``...): tens of milliseconds on every ``cocin run``, more than the
kernel needs to make a container. A record class here is declared the same
way, with annotated fields and defaults::

    class Image(Record):
        name: str
        size: int = 0
        tags: list = Factory(list)     # a fresh list per instance

and gets a keyword/positional ``__init__``, ``__eq__``, ``__repr__`` and
``to_dict()``. Nothing more: no ordering, no frozen records, no type checks.
"""

from __future__ import annotations

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    T = TypeVar("T")

_MISSING = object()


class _PerInstance:
    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def Factory(make: Callable[[], T]) -> T:
    """A default computed per instance (``Factory(dict)``), for mutable values.

    Typed as what ``make`` returns, so that ``tags: list = Factory(list)``
    type-checks as the field's own type."""
    return _PerInstance(make)  # type: ignore[return-value]


class Record:
    _fields: tuple[str, ...] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name in vars(klass).get("__annotations__", {}):
                if not name.startswith("_") and name not in names:
                    names.append(name)
        cls._fields = tuple(names)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}: too many arguments")
        for name, value in zip(self._fields, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}: {name} given twice")
            kwargs[name] = value
        for name in self._fields:
            setattr(self, name, kwargs.pop(name) if name in kwargs else self.default(name))
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected {', '.join(kwargs)}")

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (a fresh one for a ``Factory``)."""
        value = getattr(cls, name, _MISSING)
        if value is _MISSING:
            raise TypeError(f"{cls.__name__}: missing {name}")
        return value.make() if isinstance(value, _PerInstance) else value

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (shallow: values are shared, not copied)."""
        return {name: getattr(self, name) for name in self._fields}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and type(other) is type(self) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{type(self).__name__}({inner})"
