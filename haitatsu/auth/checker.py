"""A ``twisted.cred`` checker that accepts a mailbox's primary address and an app password.

The avatar id is the mailbox id (as ``bytes``, as twisted.cred expects). Each protocol builds its
checker with the scope it needs (``imap``, ``smtp``, ``pop3``), so a password made for IMAP does not
open SMTP submission.
"""

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from zope.interface import implementer


@implementer(ICredentialsChecker)
class AppPasswordChecker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, store, scope):
        self._store = store
        self._scope = scope

    @defer.inlineCallbacks
    def requestAvatarId(self, creds):
        username = _text(creds.username)
        password = _text(creds.password)
        if not username or not password:
            raise error.UnauthorizedLogin("missing username or password")
        mailbox = yield self._store.authenticate(username, password, self._scope)
        if mailbox is None:
            raise error.UnauthorizedLogin("invalid credentials")
        return mailbox.id.encode("ascii")


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""
