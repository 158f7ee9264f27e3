"""POP3 over the store: twisted.mail's POP3 server with our framing, streaming and a throttled
login."""

from haitatsu.pop3.maildrop import Maildrop, POP3Realm
from haitatsu.pop3.server import POP3Factory, POP3Server

__all__ = ["Maildrop", "POP3Factory", "POP3Realm", "POP3Server"]
