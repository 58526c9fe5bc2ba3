"""The one place where Classifr's errors become what Gradio shows: `gr.Error`, one readable line.

Every error a user can cause is a `ClassifrError` whose message is already a user-facing line
(classifr.core.errors), so an event handler only needs `@shows_errors`; anything else is a bug and
stays an exception (Gradio then shows a generic "Error" and the server log has the traceback).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import gradio as gr

from classifr.core.errors import ClassifrError

P = ParamSpec("P")
R = TypeVar("R")


def shows_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn`; a ClassifrError it raises reaches the user as `gr.Error` with the same one-line message.

    `functools.wraps` keeps the signature Gradio reads (gr.Request, gr.OAuthToken, gr.Progress).
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ClassifrError as err:
            raise gr.Error(str(err)) from err

    return wrapper
