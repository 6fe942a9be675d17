"""Argument checks shared by the public constructors.

Every check raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for a
value out of range, with a message that names the argument, its bound and what it got:
``max_concurrent must be >= 1, got 0``.
"""

from __future__ import annotations

import functools
import inspect
import math
from numbers import Real
from typing import Any

__all__ = [
    "check_async_callable",
    "check_int",
    "check_number",
    "check_optional_int",
    "check_optional_number",
    "check_str",
]


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {_type_name(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real number within the bounds.

    ``positive=True`` asks for ``value > 0`` (an open bound, unlike ``minimum``).
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {_type_name(value)} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value:g}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {value:g}")
    return value


def check_str(name: str, value: Any) -> str:
    """Return ``value`` if it is a string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {_type_name(value)} {value!r}")
    return value


def check_optional_int(name: str, value: Any, *, minimum: int | None = None) -> int | None:
    """Like :func:`check_int`, but ``None`` passes through (it means "no limit")."""
    return None if value is None else check_int(name, value, minimum=minimum)


def check_optional_number(name: str, value: Any, *, positive: bool = False) -> float | None:
    """Like :func:`check_number`, but ``None`` passes through (it means "off")."""
    return None if value is None else check_number(name, value, positive=positive)


def check_async_callable(name: str, value: Any) -> Any:
    """Return ``value`` if calling it gives a coroutine: an ``async def`` function, a
    ``functools.partial`` of one, or an object whose ``__call__`` is ``async def``.

    Refused up front, so that a sync function fails here with its name rather than at
    the first ``await`` with "object NoneType can't be used in 'await' expression". A
    sync function that returns an awaitable cannot be told apart: wrap it in ``async def``.
    """
    if not callable(value):
        raise TypeError(f"{name} must be an async callable (async def), got {_type_name(value)} {value!r}")
    target = value
    while isinstance(target, functools.partial):
        target = target.func
    call = getattr(type(target), "__call__", None)  # noqa: B004  (an instance's async __call__)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call):
        return value
    label = getattr(target, "__qualname__", None) or _type_name(target)
    raise TypeError(
        f"{name} must be an async callable (async def), got the sync {label!r}: "
        "wrap it, e.g. 'async def run(batch): sync_fn(batch)'"
    )
