"""Progress bars: tqdm on a terminal, nothing anywhere else.

`progress_bar(total, desc)` is a context manager with `update(n)`, `set_description(text)` and
`set_postfix_str(text)`. It draws a tqdm bar on stderr only when both stdout and stderr are terminals (so a
log file, a pipe, a notebook cell capture or a test run gets clean output), and only if tqdm is installed:
a progress bar is a comfort, never a reason to fail. `enabled=True/False` overrides the check.
"""

from __future__ import annotations

import sys


class _NoBar:
    """The interface of a tqdm bar, doing nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def on_terminal() -> bool:
    """True when both stdout and stderr are interactive terminals."""
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def progress_bar(total: int, desc: str = "", *, enabled: bool | None = None, leave: bool = True):
    """A tqdm bar over `total` steps when `enabled` (default: on a terminal and tqdm importable), else a no-op."""
    if enabled is None:
        enabled = on_terminal()
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, leave=leave, dynamic_ncols=True, file=sys.stderr, unit="step")
