"""The processes of one training run: one, or those `accelerate launch` / `torchrun` started.

Every process loads the data and trains its share of each batch; only the main process evaluates,
publishes, promotes and prints (docs/training-gpu.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)


def process_state():
    """accelerate's PartialState for this run: one process, or those accelerate launch / torchrun started.

    Made first, before the tracker or the Accelerator make it: accelerate keeps the first caller's
    choice, and without GPUs it joins the processes (over gloo) only when asked with cpu=True; asked
    without it, each process would train and publish alone.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or (several and not torch.cuda.is_available()))


def is_main_process() -> bool:
    """Whether this is the process that evaluates, publishes, tracks and prints (the only one when alone).

    PartialState describes the processes without fixing a training option such as mixed precision
    (AcceleratorState would); accelerate's tracker classes need it set up.
    """
    from accelerate import PartialState

    return PartialState().is_main_process


@contextmanager
def one_at_a_time() -> Iterator[None]:
    """The main process first, then the first process of each other machine, then all the others.

    What the first writes (v1 built in an empty registry, a --dataset imported into the cache, a Hub
    download) the later ones find and reuse, whether the machines share CLASSIFR_HOME or not.
    One process: no waiting.
    """
    from accelerate import PartialState

    processes = PartialState()
    with processes.main_process_first(), processes.local_main_process_first():
        yield


def threads_per_process(num_threads: int) -> int:
    """CLASSIFR_NUM_THREADS (default: every core) shared by this machine's training processes, one at least.

    accelerate launch sets OMP_NUM_THREADS=1, but configure_runtime sets torch's threads after it.
    """
    return max(1, num_threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def process_tag(state) -> str:
    """' (process 2 of 4)' for the other processes' error lines; empty for the main one."""
    return "" if state.is_main_process else f" (process {state.process_index} of {state.num_processes})"
