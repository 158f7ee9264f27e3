"""Logging: ``twisted.logger`` events, as text on a terminal or JSON lines, filtered by level.

``twistd haitatsu`` points twistd's ``--logger`` at ``observer`` (unless the operator chose a
logger), so the config's ``logging`` block decides the format and level. The level filter is
live: a config reload changes it for the next event. The format is chosen at start-up.
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
}


class LogSettings:
    """What ``observer`` builds from: set by the twistd options before logging starts."""

    def __init__(self):
        self.level = "info"
        self.format = "text"
        self.logfile = ""
        self.nodaemon = True
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)

    def set_level(self, level: str) -> None:
        self.level = level
        self.predicate.setLogLevelForNamespace("", LEVELS.get(level, LogLevel.info))


settings = LogSettings()


def configure(config, logfile: str = "", nodaemon: bool = True) -> None:
    settings.format = config.logging.format
    settings.logfile = logfile or ""
    settings.nodaemon = nodaemon
    settings.set_level(config.logging.level)


def apply_reload(old, new) -> None:
    """A ``ConfigWatcher`` listener: a new ``logging.level`` applies at once."""
    if old.logging.level != new.logging.level:
        settings.set_level(new.logging.level)


def _output():
    if settings.logfile == "-" or (settings.nodaemon and not settings.logfile):
        return sys.stdout
    return LogFile.fromFullPath(settings.logfile or "twistd.log")


def observer():
    """twistd's ``--logger`` factory: text or JSON lines, behind the live level filter."""
    out = _output()
    if settings.format == "json":
        inner = jsonFileLogObserver(out, recordSeparator="")
    else:
        inner = textFileLogObserver(out)
    return FilteringLogObserver(inner, [settings.predicate])
