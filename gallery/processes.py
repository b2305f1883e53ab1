"""Processes that end with their parent (Linux's PR_SET_PDEATHSIG): `up`'s children, and what
an RQ worker forks (its scheduler), so none outlives the process that started it."""

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """In a new child: SIGTERM it when its parent ends, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: children outlive a killed parent there
