"""``twistd haitatsu``: command-line options and the service tree."""

from __future__ import annotations

import os

from twisted.python import usage

from haitatsu.config.model import ConfigError

DEFAULT_CONFIG = "/etc/haitatsu/haitatsu.pkl"


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Runs haitatsu: SMTP, IMAP and the REST API over SQL metadata and a blob store, "
        "configured by one Pkl file."
    )
    optParameters = [
        ["config", "c", os.environ.get("HAITATSU_CONFIG", DEFAULT_CONFIG), "The Pkl config file."],
    ]

    def postOptions(self):
        from haitatsu.config.loader import load_config

        path = os.path.abspath(self["config"])
        try:
            self["parsed_config"] = load_config(path)
        except ConfigError as e:
            raise usage.UsageError(f"haitatsu: cannot load configuration: {e}") from None
        self["config"] = path
        parent = self.parent
        if parent is not None and not parent.get("logger"):
            from haitatsu import log

            log.configure(
                self["parsed_config"], parent.get("logfile") or "", bool(parent.get("nodaemon"))
            )
            parent["logger"] = "haitatsu.log.observer"


def makeService(options):
    from twisted.internet import reactor

    from haitatsu.hub import HaitatsuService

    try:
        return HaitatsuService(options["config"], options["parsed_config"], reactor)
    except ConfigError as e:
        # Unusable TLS certificate files, for example: say which, without a traceback.
        raise SystemExit(f"haitatsu: cannot start: {e}") from None
