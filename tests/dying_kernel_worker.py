"""`kernos worker` whose process is killed (SIGKILL) right after a storage write commits.

The write is in PostgreSQL, and the activity's completion never reaches Temporal: the retry
lands on another worker, which must find the version the first attempt wrote.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from kernos.cli import main
from kernos.kernel.file_store import StorageStore
from kernos.kernel.syscalls import FileVersion

_write = StorageStore.write


async def _write_then_die(self: StorageStore, **arguments: Any) -> FileVersion:
    await _write(self, **arguments)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: the process is gone")


StorageStore.write = _write_then_die  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
