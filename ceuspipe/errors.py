"""Exceptions that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations

import os


class CeuspipeError(Exception):
    """A failure a user can act on. ``str(err)`` is the one line shown."""


class InputError(CeuspipeError):
    """Bad input file or folder: the message names the path and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OutputError(CeuspipeError):
    """The output location cannot be written as asked (exists, not empty, no space...)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class Terminated(BaseException):
    """SIGTERM arrived (a cron ``timeout``, ``kill``): raised in the main thread like
    ``KeyboardInterrupt``, so every ``finally`` and atomic-output clean-up runs;
    the CLI exits with status 143."""
