"""Where PyTorch work runs, so that predictions keep PyTorch's full speed (docs/speed.md, "One forward thread").

PyTorch's CPU kernels run on OpenMP thread teams, one team per thread that calls into PyTorch,
and a team lives as long as its calling thread. While a single team exists its threads wait for
the next forward pass actively and answer at once; as soon as a second one exists (an idle
request thread that once explained a photo is enough) the OpenMP runtime throttles that waiting,
and a prediction of the default model takes about 40 ms instead of 25 ms on 2 cores. So:

* predictions run on one long-lived forward thread (`ClassifrService`);
* occasional PyTorch work elsewhere (loading and checking a version, an explanation) runs on a
  thread of its own that ends with the work, taking its team with it: `in_own_thread`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def in_own_thread(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work(*args, **kwargs)` on a new thread that ends with it; its result, or its exception raised here."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the caller as it is
            outcome["error"] = err

    thread = threading.Thread(target=run, name=f"classifr-{getattr(work, '__name__', 'work')}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
