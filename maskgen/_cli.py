"""What the ``maskgen`` and ``distill`` command lines share.

* ``--version`` (the package version, with torch's where it is loaded) and ``--debug`` (show the
  traceback of an error) on the app;
* :func:`cli_errors`: a command's usage, config and input errors (``ValueError``, ``OSError``
  and the types a command adds) end as one ``error: ...`` line on stderr and exit code 2;
  failures of a run that was set up correctly (``failures``) exit 1; ``--debug`` re-raises;
* :func:`progress_option` / :func:`show_progress`: ``--progress/--no-progress``, by default on
  only when stderr is a terminal (no carriage returns in logs).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any, NoReturn, TypeVar

import typer

__all__ = [
    "add_app_options",
    "cli_errors",
    "error_line",
    "fail",
    "progress_option",
    "show_progress",
]

F = TypeVar("F", bound=Callable[..., Any])

#: errors that mean "the command was given something it cannot use": exit code 2.
USAGE_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)

_state = {"debug": False}


def package_version() -> str:
    """The installed ``maskgen`` distribution's version (the source's when not installed)."""
    try:
        return metadata.version("maskgen")
    except metadata.PackageNotFoundError:  # a checkout on sys.path without an install
        from maskgen import __version__

        return __version__


def version_text(prog: str) -> str:
    """``distill 0.1.0 (python 3.11.9, torch 2.13.0+cpu)``; torch only if it is installed."""
    parts = [f"python {sys.version.split()[0]}"]
    with contextlib.suppress(metadata.PackageNotFoundError):
        parts.append(f"torch {metadata.version('torch')}")
    return f"{prog} {package_version()} ({', '.join(parts)})"


def add_app_options(app: typer.Typer, prog: str) -> None:
    """Give ``app`` the ``--version`` and ``--debug`` options (before the command)."""

    def show_version(value: bool) -> None:
        if value:
            typer.echo(version_text(prog))
            raise typer.Exit()

    @app.callback()
    def _options(
        version: bool = typer.Option(
            False, "--version", is_eager=True, callback=show_version, help="Show the version."
        ),
        debug: bool = typer.Option(
            False, "--debug", help="Show the full traceback of an error (before the command)."
        ),
    ) -> None:
        _state["debug"] = debug


def error_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type when it has none)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def cli_errors(
    usage: tuple[type[BaseException], ...] = (),
    failures: tuple[type[BaseException], ...] = (),
) -> Callable[[F], F]:
    """Decorate a command: ``usage`` errors (plus :data:`USAGE_ERRORS`) exit 2, ``failures``
    exit 1, each as one ``error: ...`` line; ``--debug`` shows the traceback instead.

    ``failures`` are matched first, so a failure type may subclass a usage error.
    """

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except failures as exc:
                fail(exc, 1)
            except (*usage, *USAGE_ERRORS) as exc:
                fail(exc, 2)

        return wrapper  # type: ignore[return-value]

    return decorator


def fail(exc: BaseException, code: int) -> NoReturn:
    """End the command with ``error: <first line>`` and exit ``code`` (``--debug``: re-raise)."""
    if _state["debug"]:
        raise exc
    typer.echo(f"error: {error_line(exc)}", err=True)
    raise typer.Exit(code) from exc


def progress_option(help: str = "Show progress bars") -> Any:
    """``--progress/--no-progress``; unset (``None``) means: only when stderr is a terminal."""
    return typer.Option(
        None, "--progress/--no-progress", help=f"{help} (default: when stderr is a terminal)."
    )


def show_progress(flag: bool | None) -> bool:
    """The ``--progress`` flag, or whether stderr is a terminal when it was not given."""
    return sys.stderr.isatty() if flag is None else bool(flag)
