"""Ending a process that used a Temporal client."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_process(status: int) -> NoReturn:
    """Flush output and exit with `status`, skipping interpreter finalisation.

    Temporal's Rust core can abort the interpreter while it finalises (seen here as
    "PyGILState_Release: thread state must be current"), turning a successful command into a
    crash. Everything worth keeping is closed explicitly before this is called.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
