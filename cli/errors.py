"""How every `leukedge` command ends: exit codes in one place, one line on stderr on failure.

Exit codes:

- 0 (:data:`EXIT_OK`): done; every input was handled.
- 1 (:data:`EXIT_FAILED`): the command ran but something failed: some inputs could not be
  classified, a check refused a result (export parity, the quantization gate), training failed.
- 2 (:data:`EXIT_USAGE`): nothing was done: a bad option or argument, a missing or unusable
  model, data or run folder, a missing extra.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NoReturn

import typer

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``Error: message`` to stderr and exit with ``code`` (no traceback)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def exit_code(error: BaseException) -> int:
    """1 for a check that refused a result, 2 for everything a user fixes before rerunning."""
    from leukedge.runtime.errors import CheckRefused

    return EXIT_FAILED if isinstance(error, CheckRefused) else EXIT_USAGE


@contextlib.contextmanager
def reported(*extra: type[BaseException]) -> Iterator[None]:
    """Turn leukedge's errors (and ``extra`` types, e.g. ValueError) into ``fail``.

    Example:
        >>> with reported(ValueError):
        ...     model = Classifier(path)
    """
    from leukedge.runtime.errors import LeukedgeError

    try:
        yield
    except (LeukedgeError, *extra) as e:
        fail(str(e), exit_code(e))


def need(module: str, extra: str, what: str) -> None:
    """Exit 2 with the install hint when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        fail(f"{what} needs {module}: pip install 'leukedge[{extra}]'", EXIT_USAGE)
