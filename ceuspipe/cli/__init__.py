"""The ``ceuspipe`` command line: a click group whose commands live in this package.

Every module here defines click commands and a ``register(group)`` function;
they are discovered automatically, so adding a command touches one file. Heavy
imports (torch, PyAV) happen inside the commands to keep start-up fast.

Errors: a :class:`~ceuspipe.errors.CeuspipeError` (or any unexpected exception)
becomes one line on stderr and exit status 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from ceuspipe import __version__
from ceuspipe.errors import CeuspipeError

log = logging.getLogger("ceuspipe")


class _Group(click.Group):
    """Turns failures into one clear line unless ``--debug`` was given."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("ceuspipe: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the CLI boundary
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, CeuspipeError):
                click.echo(f"ceuspipe: error: {exc}", err=True)
            elif isinstance(exc, OSError) and exc.filename:
                click.echo(f"ceuspipe: error: {exc.filename}: {exc.strerror or exc}", err=True)
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


def show_progress(ctx: click.Context | None = None) -> bool:
    """Progress bars on when stderr is a terminal and ``--quiet`` was not given."""
    ctx = ctx or click.get_current_context(silent=True)
    quiet = bool(ctx and ctx.obj and ctx.obj.get("quiet"))
    return not quiet and sys.stderr.isatty()


for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    _register = getattr(_module, "register", None)
    if _register is not None:
        _register(main)
