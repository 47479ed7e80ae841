"""The one exception type users see: what went wrong, where, and how to fix it."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class VisionbenchError(Exception):
    """An error meant for a person: the CLI prints it without a traceback."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix:   {self.fix}")
        return "\n".join(lines)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the nearest valid name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> VisionbenchError:
    choices = sorted(choices)
    return VisionbenchError(
        f"unknown {kind} '{name}'.{did_you_mean(name, choices)}",
        fix=f"choose one of: {', '.join(choices)}",
    )


def write_error(e: OSError, what: str, where, then: str) -> VisionbenchError:
    """An OSError met while writing `what`, said with what to do: free space on a full disk,
    another folder for a read-only one; then `then`."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free disk space, then {then}"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make that folder writable or choose another one, then {then}"
    else:
        fix = then
    return VisionbenchError(f"cannot write {what}: {e.strerror or e}", where=str(where), fix=fix)
