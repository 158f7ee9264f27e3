"""IMAP4rev1 over the store: twisted.mail's IMAP4Server re-framed for large mailboxes."""

from haitatsu.imap.account import Account, IMAPRealm
from haitatsu.imap.server import IMAPFactory, IMAPServer

__all__ = ["Account", "IMAPFactory", "IMAPRealm", "IMAPServer"]
