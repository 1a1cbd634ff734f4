"""The object's log, stored by the station beside its own events and queryable with
``host logs ID`` or ``GET /objects/{id}?logs=true``.

    >>> from object_primitive import log
    >>> log.info("loaded %d items", 3)      # %-style arguments, like the logging module
    >>> log.warn("nothing left")

An uncaught exception in a handler is logged here at ``error`` level with its traceback.
Writing to stdout/stderr (``print``) may also reach the log, as ``stdout``/``stderr`` events,
if the station captures them; prefer these functions.
"""

from __future__ import annotations

import enum

from . import _sys

__all__ = ["Level", "log", "trace", "debug", "info", "warn", "warning", "error"]


class Level(enum.IntEnum):
    """Severity of a log line, lowest first."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4

    def __str__(self) -> str:
        """The level's lower-case name: ``trace``, ``debug``, ``info``, ``warn`` or ``error``."""
        return self.name.lower()


def log(level: Level, message: str, *args: object) -> None:
    """Appends one line to the object's log at ``level``; the station tags it with the
    current request id. With ``args``, the line is ``message % args``."""
    if args:
        message = message % args
    elif not isinstance(message, str):
        message = str(message)
    _sys.log(int(level), message)


def trace(message: str, *args: object) -> None:
    """Logs at :attr:`Level.TRACE`."""
    log(Level.TRACE, message, *args)


def debug(message: str, *args: object) -> None:
    """Logs at :attr:`Level.DEBUG`."""
    log(Level.DEBUG, message, *args)


def info(message: str, *args: object) -> None:
    """Logs at :attr:`Level.INFO`."""
    log(Level.INFO, message, *args)


def warn(message: str, *args: object) -> None:
    """Logs at :attr:`Level.WARN`."""
    log(Level.WARN, message, *args)


#: Alias of :func:`warn`, as in the ``logging`` module.
warning = warn


def error(message: str, *args: object) -> None:
    """Logs at :attr:`Level.ERROR`."""
    log(Level.ERROR, message, *args)
