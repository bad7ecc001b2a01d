"""Stand-ins for npnorm.warmup's worker (``_worker_main``) and its compile step (``_warm``), for
tests/test_warmup_failures.py. A spawned worker imports its target by module and name, so the worker stand-ins
live in a module of their own, which the tests' path makes importable there too."""

from __future__ import annotations

import os
import signal
import time


def killed(names, dtypes, results) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def exits(names, dtypes, results) -> None:
    os._exit(3)


def fails_on_the_second(names, dtypes, results) -> None:
    results.send(("done", names[0], {names[0]: 0.0}))
    results.send(("failed", names[1], "RuntimeError: compile failed"))


def compiles_slowly(names, dtypes, results) -> None:
    """As the real worker, ignoring Ctrl-C, but taking a minute per norm."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in names:
        time.sleep(60)
        results.send(("done", name, {name: 60.0}))


def quick(names, dtypes, results) -> None:
    for name in names:
        results.send(("done", name, {name: 0.0}))


def warm_quickly(names, dtypes) -> dict[str, float]:
    return {name: 0.0 for name in names}


def warm_slowly(names, dtypes) -> dict[str, float]:
    time.sleep(60)
    return {name: 60.0 for name in names}


def warm_and_swallow_interrupts(names, dtypes) -> dict[str, float]:
    """What an interrupt inside llvmlite's callback looks like: the KeyboardInterrupt never gets out."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            time.sleep(end - time.monotonic())
        except KeyboardInterrupt:
            return {name: 0.0 for name in names}
    return {name: 60.0 for name in names}


def warm_and_turn_interrupts_into_errors(names, dtypes) -> dict[str, float]:
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        raise RuntimeError("no compiled object yet") from None
    return {name: 60.0 for name in names}
