"""The one place where Classifr's errors become what Gradio shows: `gr.Error`, one readable line.

Every error a user can cause is a `ClassifrError` whose message is already a user-facing line
(classifr.core.errors), so an event handler only needs `@shows_errors`. For operators
(docs/monitoring.md, "Server log"): an expected error is one log line with the handler, the
client address and the reason, and Gradio is told not to print its traceback; anything else is a
bug, logged once with its traceback and the client, and shown as Gradio shows any error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import gradio as gr

from classifr.core.errors import ClassifrError
from classifr.ui.requests import client_of

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def shows_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn`; a ClassifrError it raises reaches the user as `gr.Error` with the same one-line message.

    `functools.wraps` keeps the signature Gradio reads (gr.Request, gr.OAuthToken, gr.Progress);
    the client address comes from the `gr.Request` among the arguments, when the handler takes one.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ClassifrError as err:
            _refused(fn, args, kwargs, str(err))
            raise gr.Error(str(err), print_exception=False) from err
        except gr.Error as err:  # a handler's own check ("Pick a prediction first")
            _refused(fn, args, kwargs, str(err.message))
            err.print_exception = False
            raise
        except Exception as err:
            logger.exception("%s failed for %s", fn.__name__, _client(args, kwargs))
            # Logged above, traceback included: Gradio need not print it a second time.
            raise gr.Error(str(err) or type(err).__name__, print_exception=False) from err

    return wrapper


def _refused(fn: Callable[..., Any], args: tuple, kwargs: dict, reason: str) -> None:
    logger.info("%s refused for %s: %s", fn.__name__, _client(args, kwargs), reason)


def _client(args: tuple, kwargs: dict) -> str:
    for value in (*args, *kwargs.values()):
        if isinstance(value, gr.Request):
            return client_of(value) or "an unknown address"
    return "an unknown address"
