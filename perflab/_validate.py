"""The one vocabulary for checking what users pass in: the public constructors' arguments,
a sweep's grid, the notebooks' parameters, and the text of the command line (``--grid``,
``-p``, numeric options).

Every check raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for a
value out of range, with a message that names the argument, its bound and what it got:
``max_concurrent must be >= 1, got 0``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

__all__ = [
    "check_async_callable",
    "check_grid",
    "check_int",
    "check_number",
    "check_optional_int",
    "check_optional_number",
    "check_str",
    "grid_points",
    "parse_int",
    "parse_literal",
    "parse_number",
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


def check_grid(grid: Any, *, name: str = "grid") -> dict[str, list[Any]]:
    """A sweep's grid: a non-empty mapping of identifier to a non-empty list of strings or
    finite numbers (``repeat`` is the repeat column's); returned as a dict of lists."""
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(
            f"{name} must be a non-empty mapping of parameter name to a list of values, "
            f"like {{'max_concurrent': [1, 4]}}, got {grid!r}"
        )
    for key, values in grid.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{name} parameter names must be identifiers, got {key!r}")
        if key == "repeat":
            raise ValueError(f"{name} parameter 'repeat' is reserved for the repeat column")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise TypeError(f"{name}[{key!r}] must be a list of values, got {_type_name(values)}")
        if not values:
            raise ValueError(f"{name}[{key!r}] is empty: give at least one value")
        for value in values:
            if not isinstance(value, str | Real) or (isinstance(value, float) and not math.isfinite(value)):
                raise TypeError(f"{name}[{key!r}] values must be strings or finite numbers, got {value!r}")
    return {key: list(values) for key, values in grid.items()}


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (the last name varies fastest)."""
    checked = check_grid(grid)
    names = list(checked)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*checked.values())]


# --------------------------------------------------------------------------- command-line text


def parse_literal(text: str, *, name: str = "value", strict: bool = False) -> Any:
    """A Python literal if ``text`` parses as one (``[1, 2]``, ``0.5``, ``'x'``), else the
    text itself (with ``strict``, ValueError); a literal that cannot be built
    (``{[1]: 2}``) raises ValueError."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if strict:
            raise ValueError(f"{name} {text!r} is not a Python literal") from None
        return text
    except (TypeError, MemoryError, RecursionError) as error:
        raise ValueError(f"{name} {text!r} is not a valid literal: {error}") from None


def parse_int(text: str, *, minimum: int | None = None) -> int:
    """A whole number from the command line; ValueError says what is wrong ("must be ...")."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"must be a whole number, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum}, got {value}")
    return value


def parse_number(text: str, *, minimum: float | None = None) -> float:
    """A finite number from the command line (nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {text!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum:g}, got {value:g}")
    return value
