"""diffrepro's Snakemake logger plugin: a `--configfile` checked before Snakemake reads it, and a
compact log (`snakemake --logger diffrepro`).

Snakemake loads the files given with `--configfile` before it reads the Snakefile, so a missing,
malformed or list-valued file would otherwise stop it with a traceback or a `WorkflowError` that
does not name the file. Snakemake imports every installed logger plugin while it builds its command
line parser, before it loads any config file; importing this package then reads each file named by
`--configfile`/`--configfiles` with the project's own params check (`diffrepro.config.load_params`)
and, when one is bad, prints one line naming the file (and the line, or the key and what is allowed)
and exits 1. Nothing else changes: a good file goes on to Snakemake untouched.

As a logger (`--logger diffrepro`), it prints one line per job start, failure and progress step
instead of Snakemake's multi-line blocks: a failed job's line names its log file, where the stage's
own one-line error stands.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

CONFIG_FLAGS = ("--configfile", "--configfiles")


def configfiles_in(argv: list) -> list:
    """The files a Snakemake command line names with --configfile/--configfiles (both take one or more
    values, up to the next flag; `--configfile=X` too)."""
    found, taking = [], False
    for word in argv:
        if taking and not word.startswith("-"):
            found.append(word)
            continue
        taking = False
        name, eq, value = word.partition("=")
        if name in CONFIG_FLAGS:
            if eq:
                found.append(value)
            else:
                taking = True
    return found


def check_configfiles(argv: list) -> str | None:
    """The one-line error for the first bad config file `argv` names, or None when all are good."""
    from diffrepro.config import ParamsError, load_params

    for path in configfiles_in(argv):
        try:
            load_params(path)
        except ParamsError as exc:
            message = str(exc)
            return message if path in message else f"--configfile {path!r}: {message}"
    return None


def _invoked_as_snakemake(argv: list) -> bool:
    prog = os.path.basename(argv[0]) if argv else ""
    return prog in ("snakemake", "__main__.py") and "snakemake" in (argv[0] if argv else "")


if _invoked_as_snakemake(sys.argv) and configfiles_in(sys.argv[1:]):
    _error = check_configfiles(sys.argv[1:])
    if _error is not None:
        print(f"diffrepro: error: {_error}", file=sys.stderr)
        sys.exit(1)


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    pass


class LogHandler(LogHandlerBase):
    """One line per job start, job failure and progress step (`snakemake --logger diffrepro`)."""

    def __post_init__(self) -> None:
        self.stream = sys.stderr

    def format(self, record: logging.LogRecord) -> str | None:
        event = str(getattr(record, "event", "") or "")
        wildcards = getattr(record, "wildcards", None) or {}
        where = ",".join(f"{k}={v}" for k, v in dict(wildcards).items())
        job = f"{getattr(record, 'rule_name', '?')}{f' [{where}]' if where else ''}"
        if event == "job_info":
            return f"start {job}"
        if event == "job_error":
            logs = ", ".join(getattr(record, "log", None) or []) or "no log file"
            return f"FAILED {job}: see {logs}"
        if event == "progress":
            return f"{record.done} of {record.total} jobs done"
        if event in ("error", "") and record.levelno >= logging.WARNING:
            return record.getMessage()
        return None

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
