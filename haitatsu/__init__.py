"""haitatsu: a self-hosted mailbox backend for platforms, on Twisted."""

__version__ = "0.1.0"
