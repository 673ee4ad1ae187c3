"""Where result lines go: stdout, a regular file, or a stream such as a device or a FIFO.

The destination is opened *before* anything is classified, so an unwritable ``--output`` is
reported at once instead of after a long run. A regular file is written through a temp file in
its own folder and renamed into place at the end (readers never see half a file; a previous
file keeps its permission bits, since results are patient data); anything else that already
exists and is not a regular file (``/dev/stdout``, a FIFO, ``/dev/null``) is streamed to as it
is, never replaced.

An output that is one of the command's own inputs (an image, the model) is refused before any
work (:func:`refuse_inputs`): ``-o a.jpg`` next to ``a.jpg`` used to replace the image with CSV.
A write that fails (a full disk) removes the temp file and raises :class:`OutputError`.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterable, Optional

from leukedge.runtime.files import same_name


class OutputError(OSError):
    """The results could not be written; the message names the flag and the file."""


def _identity(path: Path) -> Optional[tuple[int, int]]:
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def refuse_inputs(output: Optional[os.PathLike], flag: str,
                  protect: Iterable[os.PathLike]) -> None:
    """ValueError naming ``flag`` when ``output`` is the same file as one of ``protect``.

    The same file means the same (device, inode) when both exist (hard links, other spellings,
    symlinks), or the same real path when the output does not exist yet.
    """
    if output is None:
        return
    target = Path(output)
    if not stat.S_ISREG(_mode(target)) and target.exists():
        return  # a device or FIFO is streamed to, never replaced
    target_id, target_real = _identity(target), same_name(target)
    for item in protect:
        other = Path(item)
        other_id = _identity(other)
        if (target_id is not None and target_id == other_id) or same_name(other) == target_real:
            raise ValueError(f"{flag} {target} is the same file as {_kind(other)} {other}; "
                             "writing the results there would destroy it. Give another file "
                             "name.")


def model_file(model: Optional[str]) -> list[Path]:
    """``[the model's file]`` for ``protect``; [] when it cannot be resolved (the command
    reports the model's own error when it opens it)."""
    from leukedge.runtime.errors import LeukedgeError
    from leukedge.runtime.models import resolve_model

    try:
        return [resolve_model(model)]
    except (LeukedgeError, OSError, ValueError):
        return []


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except (OSError, ValueError):
        return stat.S_IFREG


def _kind(path: Path) -> str:
    return "the model" if path.suffix.lower() == ".onnx" else "the input"


class Destination:
    """Open with :meth:`open`; :meth:`write` lines; :meth:`commit` at the end (or
    :meth:`discard` on failure)."""

    def __init__(self, stream: IO[str], final: Optional[Path] = None,
                 temp: Optional[Path] = None, mode: Optional[int] = None,
                 flag: str = "--output"):
        self._stream, self._final, self._temp, self._mode = stream, final, temp, mode
        self._where = flag

    @classmethod
    def open(cls, output: Optional[Path], flag: str = "--output",
             protect: Iterable[os.PathLike] = ()) -> "Destination":
        """Standard output for None; else the file or stream. Raises ValueError naming ``flag``
        (also when ``output`` is one of the files in ``protect``: the inputs, the model)."""
        if output is None:
            return cls(sys.stdout, flag="standard output")
        refuse_inputs(output, flag, protect)
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
                                buffering=1), flag=f"{flag} {target}")
            except OSError as e:
                raise ValueError(f"{flag} {target}: cannot write ({e.strerror or e})") from None
        folder = target.parent if str(target.parent) else Path(".")
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=folder)
        except OSError as e:
            raise ValueError(f"{flag} {target}: cannot write there ({e.strerror or e})") from None
        stream = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="\n")
        mode = stat.S_IMODE(info.st_mode) if info is not None else 0o644
        return cls(stream, target, Path(temp), mode, flag=f"{flag} {target}")

    def write(self, line: str) -> None:
        """One line; a stream that cannot encode a character (stdout in cp1252) gets it escaped.

        Raises:
            OutputError: the write failed (a full disk, a closed pipe).
        """
        try:
            self._stream.write(_encodable(line + "\n", self._stream))
            if self._final is None:
                self._stream.flush()
        except OSError as e:
            raise self._error(e) from e

    def commit(self) -> None:
        """Close; a regular file is renamed into place (atomic) with its mode.

        Raises:
            OutputError: the data could not be written or renamed (the temp file is removed).
        """
        try:
            self._stream.flush()
            if self._temp is None:
                if self._stream is not sys.stdout:
                    self._stream.close()
                return
            os.fsync(self._stream.fileno())
            self._stream.close()
            os.chmod(self._temp, self._mode or 0o644)
            os.replace(self._temp, self._final)
        except OSError as e:
            self.discard()
            raise self._error(e) from e

    def discard(self) -> None:
        """Drop a half-written temp file (after a failure or an interrupt); never raises."""
        if self._temp is None:
            return
        try:
            self._stream.close()
        except (OSError, ValueError):  # the buffered rest could not be flushed: a full disk
            pass
        try:
            self._temp.unlink(missing_ok=True)
        except OSError:
            pass

    def _error(self, e: OSError) -> OutputError:
        where = self._where
        kept = "; nothing was written there (an existing file is unchanged)" \
            if self._temp is not None else ""
        return OutputError(f"{where}: cannot write the results ({e.strerror or e}){kept}")


def _encodable(text: str, stream: IO[str]) -> str:
    """``text`` with what ``stream``'s encoding cannot hold written as backslash escapes."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return text
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        return text.encode(encoding, errors="backslashreplace").decode(encoding)
    except LookupError:
        return text
