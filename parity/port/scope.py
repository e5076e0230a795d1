"""What one check keeps: its compiled programs and its models' built structures, for the length of that check
(`one_check()`) and no longer.

A check builds each side's model several times (each dtype, each trajectory run) and runs the same programs
on them (each forward pass, the gradients check's program again for the trajectory's steps); keeping them saves
a trace, a compile and a build each time. Kept longer, across checks, they would go on proving code that has
since changed: a program is kept by the identity of the functions and the structure it was traced from, and a
model's code can change under the same ones (a module-level function redefined in a notebook, a test's
monkeypatched step). So each `check_port`, `check_reference`, `infer_port` or preset-suite run opens one
scope (an inner one joins it), and outside a scope nothing is kept.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Hashable, Iterator
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

_KEPT: contextvars.ContextVar[dict[Hashable, Any] | None] = contextvars.ContextVar("parity_kept", default=None)


@contextlib.contextmanager
def one_check() -> Iterator[None]:
    """Within the block, `kept` keeps what it makes (an enclosing block's scope, where one is open)."""
    if _KEPT.get() is not None:
        yield
        return
    token = _KEPT.set({})
    try:
        yield
    finally:
        _KEPT.reset(token)


def kept(key: Hashable, make: Callable[[], T]) -> T:
    """`make()`, kept under `key` for the rest of the open check (made anew each call outside one)."""
    scope = _KEPT.get()
    if scope is None:
        return make()
    if key not in scope:
        scope[key] = make()
    return scope[key]  # type: ignore[no-any-return]


def in_one_check(function: Callable[P, T]) -> Callable[P, T]:
    """`function` run within `one_check()`."""

    @functools.wraps(function)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        with one_check():
            return function(*args, **kwargs)

    return wrapped
