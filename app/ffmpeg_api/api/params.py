"""Numbers a client sends, in the query string or a JSON body: parsed and bounded here, once.

Python's `int()` and `float()` accept what no column or interval can hold (`inf`, `nan`,
`1e300`, 20-digit integers); past this module every such value is finite and in range, and
anything else is a 422 naming the parameter.
"""

from __future__ import annotations

import math

from flask import request

from ..errors import ValidationError

BIGINT_MAX = 2**63 - 1  # PostgreSQL bigint: OFFSET, LIMIT
INTEGER_MAX = 2**31 - 1  # PostgreSQL integer: the columns a body's numbers are stored in
MAX_HOURS = 100 * 366 * 24  # a look-back window beyond a century is a typo, not a question


def bounded_int(value, name: str, *, minimum: int = 0, maximum: int = INTEGER_MAX) -> int:
    """`value` (a query string or a JSON number) as an int in [minimum, maximum]."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValidationError(f"{name} must be an integer", field=name) from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{name} must be an integer", field=name)
    if not minimum <= value <= maximum:
        raise ValidationError(f"{name} must be between {minimum} and {maximum}", field=name)
    return value


def bounded_float(value, name: str, *, minimum: float = 0.0, maximum: float) -> float:
    """`value` (a query string or a JSON number) as a finite float in [minimum, maximum]."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValidationError(f"{name} must be a number", field=name) from None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValidationError(f"{name} must be a number", field=name)
    value = float(value)
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ValidationError(
            f"{name} must be a number between {minimum:g} and {maximum:g}", field=name
        )
    return value


def query_int(name: str, default: int | None, **bounds) -> int | None:
    raw = request.args.get(name)
    return default if raw is None else bounded_int(raw, name, **bounds)


def query_float(name: str, default: float | None, **bounds) -> float | None:
    raw = request.args.get(name)
    return default if raw is None else bounded_float(raw, name, **bounds)


def query_hours(name: str, default: float | None) -> float | None:
    """A look-back window in hours (`since_hours`, `used_within_hours`)."""
    return query_float(name, default, minimum=0.0, maximum=MAX_HOURS)


def body_int(body: dict, name: str, *, required: bool = False, **bounds) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ValidationError(f"{name} is required", field=name)
        return None
    return bounded_int(value, name, **bounds)
