"""Errors that explain themselves: what went wrong, with which file, and what to do."""

from __future__ import annotations

from pathlib import Path


class SeglibError(Exception):
    """Base class. The command line prints these as one line, without a traceback."""


class ExplainedError(SeglibError):
    """An error about one place: ``Error(where, problem, fix)`` renders as ``"<where>: <problem>. Fix: <fix>"``.

    ``where`` (a path or a URL, shown as given) and ``fix`` may be None.
    """

    def __init__(self, where: object, problem: str, fix: str | None = None):
        self.where, self.problem, self.fix = where, problem, fix
        head = f"{where}: " if where is not None else ""
        tail = f". Fix: {fix}" if fix else ""
        super().__init__(f"{head}{problem}{tail}")


class DataError(ExplainedError, ValueError):
    """A file or folder that is missing, unreadable or not what the dataset promises.

    ``DataError(path, problem, fix)`` renders as ``"<path>: <problem>. Fix: <fix>"``.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(self.path, problem, fix)


class DownloadError(ExplainedError):
    """A download or an archive that cannot be trusted (bad checksum, unsafe member, cut off)."""


class ConfigError(SeglibError, ValueError):
    """An option value that cannot work (unknown name, out of range)."""
