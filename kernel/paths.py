"""Storage paths: relative, `/`-separated, confined to the caller's namespace.

A path names a file inside a tenant/agent namespace and nothing else: no absolute paths, no
`.` or `..` segments, no empty segments, no backslashes (another system's separator), no NUL
or other control characters, no segment over 255 bytes or path over 1,024. The check runs on
both sides: in the SDK, so agent code gets the error at once, and in the kernel, which trusts
nothing the workflow sends.
"""

from __future__ import annotations

from kernos.kernel.errors import InvalidPath

MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255


def check_path(path: str) -> str:
    """`path` if it is a valid storage path, else InvalidPath naming what is wrong."""
    shown = repr(path[:80] + ("..." if len(path) > 80 else ""))
    if not path:
        raise InvalidPath("the storage path is empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidPath(f"the storage path {shown} is over {MAX_PATH_BYTES} bytes")
    for char in path:
        if ord(char) < 32 or ord(char) == 127 or 0xD800 <= ord(char) <= 0xDFFF:
            raise InvalidPath(
                f"the storage path {shown} contains the control character U+{ord(char):04X}"
            )
    if "\\" in path:
        raise InvalidPath(f"the storage path {shown} contains a backslash; separate with '/'")
    if path.startswith("/"):
        raise InvalidPath(
            f"the storage path {shown} is absolute; paths are relative to the agent's namespace"
        )
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            what = "an empty segment" if not segment else f"a {segment!r} segment"
            raise InvalidPath(f"the storage path {shown} has {what}; it must name a file inside "
                              "the namespace")  # fmt: skip
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidPath(f"a segment of {shown} is over {MAX_SEGMENT_BYTES} bytes")
    return path


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a path that may end in `/`."""
    if prefix:
        check_path(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix
