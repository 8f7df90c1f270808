"""The command line: ``python -m seglib COMMAND`` (or ``seglib COMMAND``).

Each command lives in the module named for what it works on: ``datasets`` and ``prepare`` in
:mod:`seglib.cli.data`, ``train``, ``curves`` and ``quickstart`` in :mod:`seglib.cli.train`, ``evaluate``, ``predict``,
``export`` and ``latency`` in :mod:`seglib.cli.inference`; what their flags share in :mod:`seglib.cli.flags`.
Errors print as one line and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from pathlib import Path

from seglib.cli.data import add_data_parsers
from seglib.cli.flags import reference_argv, renamed
from seglib.cli.inference import add_inference_parsers
from seglib.cli.train import add_train_parsers
from seglib.errors import DataError, SeglibError

__all__ = ["build_parser", "main"]

_OS_FIXES = {
    errno.ENOENT: "check the path: the file, or a folder on the way to it, does not exist",
    errno.EACCES: "check its permissions, or choose a file or folder you may use",
    errno.EPERM: "check its permissions, or choose a file or folder you may use",
    errno.EISDIR: "it is a folder: pass a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a file is in the way where a folder is needed: choose another path, or move the file",
}


def _disk_full_fix(path: Path) -> str:
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path.cwd())
    return f"free space on the disk holding {folder} (it has {shutil.disk_usage(folder).free / 2**20:,.0f} MiB " \
           "left), or write somewhere else"


def os_error_line(exc: OSError) -> str:
    """``<file>: <problem>. Fix: <what to do>`` for an OSError, without Python's ``[Errno N]``."""
    where = exc.filename if exc.filename is not None else exc.filename2
    problem = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        fix = _disk_full_fix(Path(os.fsdecode(where)) if where is not None else Path.cwd())
    else:
        fix = _OS_FIXES.get(exc.errno, "check the path, the disk and the permissions, then try again")
    return str(DataError(where, problem, fix))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <prog>: <problem>. Fix: ...``, exit status 2; no abbreviated flags
    (``--ov`` must not reach ``--overwrite``)."""

    argv: list[str] = []  # the command line being parsed: a reference project's flag in it gets a hint

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str):
        hint = renamed(self.prog.split()[-1], _Parser.argv) if message.startswith(("unrecognized", "the following")) \
            else ""  # e.g. predict --model: "--checkpoint PATH is ...", never beside another flag's problem
        self.exit(2, f"error: {self.prog}: {message}. Fix: {hint}see '{self.prog} --help'\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but a flag the command does not know points to that command's help, not the top one's."""
        _Parser.argv = list(sys.argv[1:] if args is None else args)
        args, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = getattr(self, "commands", {})
            commands.get(getattr(args, "command", None), self).error(f"unrecognized arguments: {' '.join(extra)}")
        return args


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seglib", description="The segmentation workbook's tools.",
                     epilog="Spellings from the reference projects: `seglib --train|--test [--unet|--hourglass] "
                     "[--big] ...` is the person-mask project's main.py; see `seglib train --help`.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    add_data_parsers(sub)
    add_train_parsers(sub)
    add_inference_parsers(sub)
    parser.commands = sub.choices  # for parse_args: whose help an unknown flag points to
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in argv[1:]:  # also after the command: seglib predict ... --debug
        argv = ["--debug", *(a for a in argv if a != "--debug")]
    args = build_parser().parse_args(reference_argv(argv))
    try:
        return args.func(args)
    except BrokenPipeError:  # the output's reader stopped reading (seglib datasets | head -3): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit fails no more
        return 1
    except (SeglibError, OSError) as exc:  # expected failures: one line, no traceback
        if args.debug:
            raise
        print(f"error: {exc if isinstance(exc, SeglibError) else os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; last.pt (if any) holds the last finished epoch: use --resume", file=sys.stderr)
        return 130
