"""The ``ceuspipe`` command line: a click group whose commands live in this package.

Every module here defines click commands and a ``register(group)`` function;
they are discovered automatically, so adding a command touches one file. Heavy
imports (torch, PyAV) happen inside the commands to keep start-up fast.

Errors: a :class:`~ceuspipe.errors.CeuspipeError` (or any unexpected exception)
becomes one line on stderr and exit status 1; ``--debug`` shows the traceback.
Signals: Ctrl-C (SIGINT) and SIGTERM stop the command cleanly (temporary
outputs removed, worker threads and processes stopped) with exit status 130 and
143, the shell's convention for those signals.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import pkgutil
import signal
import sys

import click

from ceuspipe import __version__
from ceuspipe.errors import CeuspipeError, InputError, Terminated

log = logging.getLogger("ceuspipe")


class _Group(click.Group):
    """Turns failures into one clear line unless ``--debug`` was given."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("ceuspipe: interrupted (Ctrl-C); temporary outputs removed", err=True)
            ctx.exit(130)
        except Terminated:
            click.echo("ceuspipe: terminated (SIGTERM); temporary outputs removed", err=True)
            ctx.exit(143)
        except Exception as exc:  # noqa: BLE001 - the CLI boundary
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, CeuspipeError):
                click.echo(f"ceuspipe: error: {exc}", err=True)
            elif isinstance(exc, OSError) and exc.filename:
                click.echo(f"ceuspipe: error: {exc.filename}: {exc.strerror or exc}", err=True)
            elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                click.echo(f"ceuspipe: error: {exc.strerror or os.strerror(exc.errno)} "
                           "(nothing was left half-written)", err=True)
            else:
                click.echo(f"ceuspipe: error: {exc.__class__.__name__}: {exc} "
                           "(run with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ceuspipe")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """CEUS exam videos -> key frames -> datasets -> CEUSegNet -> masks and perfusion curves."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["quiet"] = quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    _raise_on_sigterm(ctx)


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _raise_on_sigterm(ctx: click.Context) -> None:
    """Turn SIGTERM into :class:`Terminated` in the main thread for this command's run."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


def show_progress(ctx: click.Context | None = None) -> bool:
    """Progress bars on when stderr is a terminal and ``--quiet`` was not given."""
    ctx = ctx or click.get_current_context(silent=True)
    quiet = bool(ctx and ctx.obj and ctx.obj.get("quiet"))
    return not quiet and sys.stderr.isatty()


class _OneLinePath(click.Path):
    """``click.Path`` whose existence/kind checks fail as :class:`InputError` (one line)
    instead of click's usage message, like every other bad input."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            raise InputError(os.fsdecode(value), _path_problem(os.fsdecode(value), self, exc)) from exc


def _path_problem(value: str, ptype: click.Path, exc: click.BadParameter) -> str:
    if not os.path.lexists(value):
        return "no such file or folder"
    if os.path.isdir(value) and not ptype.dir_okay:
        return "is a folder, not a file"
    if not os.path.isdir(value) and not ptype.file_okay:
        return "is a file, not a folder"
    if ptype.readable and not os.access(value, os.R_OK):
        return "cannot be read (permission denied)"
    if ptype.writable and not os.access(value, os.W_OK):
        return "cannot be written (permission denied)"
    return exc.format_message()


def _one_line_paths(group: click.Group) -> None:
    """Give every path argument/option of every command the one-line error behaviour."""
    for command in group.commands.values():
        for param in command.params:
            if type(param.type) is click.Path:
                param.type.__class__ = _OneLinePath


for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    _register = getattr(_module, "register", None)
    if _register is not None:
        _register(main)
_one_line_paths(main)
