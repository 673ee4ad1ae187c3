"""Where result lines go: stdout, a regular file, or a stream such as a device or a FIFO.

The destination is opened *before* anything is classified, so an unwritable ``--output`` is
reported at once instead of after a long run. A regular file is written through a temp file in
its own folder and renamed into place at the end (readers never see half a file; a previous
file keeps its permission bits, since results are patient data); anything else that already
exists and is not a regular file (``/dev/stdout``, a FIFO, ``/dev/null``) is streamed to as it
is, never replaced.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Optional


class Destination:
    """Open with :meth:`open`; :meth:`write` lines; :meth:`commit` at the end (or
    :meth:`discard` on failure)."""

    def __init__(self, stream: IO[str], final: Optional[Path] = None,
                 temp: Optional[Path] = None, mode: Optional[int] = None):
        self._stream, self._final, self._temp, self._mode = stream, final, temp, mode

    @classmethod
    def open(cls, output: Optional[Path], flag: str = "--output") -> "Destination":
        """Standard output for None; else the file or stream. Raises ValueError naming ``flag``."""
        if output is None:
            return cls(sys.stdout)
        target = Path(output)
        try:
            info = target.stat()
        except FileNotFoundError:
            info = None
        except OSError as e:
            raise ValueError(f"{flag} {target}: {e.strerror or e}") from None
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise ValueError(f"{flag} {target} is a folder; give a file name")
        if info is not None and not stat.S_ISREG(info.st_mode):
            try:  # a device, FIFO or /dev/stdout: stream to it, never replace it
                return cls(open(target, "w", encoding="utf-8", errors="backslashreplace",
                                buffering=1))
            except OSError as e:
                raise ValueError(f"{flag} {target}: cannot write ({e.strerror or e})") from None
        folder = target.parent if str(target.parent) else Path(".")
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=folder)
        except OSError as e:
            raise ValueError(f"{flag} {target}: cannot write there ({e.strerror or e})") from None
        stream = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="\n")
        mode = stat.S_IMODE(info.st_mode) if info is not None else 0o644
        return cls(stream, target, Path(temp), mode)

    def write(self, line: str) -> None:
        self._stream.write(line + "\n")
        if self._final is None:
            self._stream.flush()

    def commit(self) -> None:
        """Close; a regular file is renamed into place (atomic) with its mode."""
        if self._temp is None:
            self._stream.flush()
            if self._stream is not sys.stdout:
                self._stream.close()
            return
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        os.chmod(self._temp, self._mode or 0o644)
        os.replace(self._temp, self._final)

    def discard(self) -> None:
        """Drop a half-written temp file (after a failure or an interrupt)."""
        if self._temp is not None:
            self._stream.close()
            self._temp.unlink(missing_ok=True)
