"""The relay (smarthost) client: one SMTP session per delivery attempt, on twisted.mail's
``ESMTPClient``.

What we take from twisted.mail: the client state machine (EHLO, STARTTLS, AUTH, MAIL, RCPT,
DATA), its per-recipient RCPT results and its ``FileSender`` streaming of the body. What we
change, and why:

* Every answer is kept: the final answer per recipient (its RCPT refusal, or the answer to the
  end of DATA for those the relay took), so one refused recipient never hides another's
  success. Errors of the session itself (greeting, EHLO, STARTTLS, AUTH, a timeout, a lost or
  refused connection, a certificate that does not verify) are kept apart: they say nothing
  about the message, so they are always temporary, whatever their code.
* The body is sent as stored (CRLF lines): twisted expects LF lines and would double every CR.
  Bare LFs become CRLF and lines starting with "." are dot-stuffed, across chunk boundaries.
* Credentials never cross a connection that is neither TLS nor loopback (as Go's
  ``smtp.PlainAuth``, which the original uses, refuses too).
"""

from __future__ import annotations

import ipaddress
import re

import attrs
from twisted.internet import defer, ssl
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.mail.smtp import SUCCESS, ESMTPClient, PLAINAuthenticator, SMTPClientError
from twisted.protocols.basic import FileSender

_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")


@attrs.frozen
class Answer:
    """One answer: the SMTP ``code`` (0 when there was none: a network or TLS failure), the
    RFC 3463 ``enhanced`` status code when the server gave one, and the ``response`` text as
    received (code included, lines joined by a space)."""

    code: int
    enhanced: str
    response: str

    @classmethod
    def from_reply(cls, code: int, text) -> Answer:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
        first = lines[0] if lines else ""
        m = _ENHANCED.match(first)
        body = " ".join(lines)
        return cls(code, m.group(1) if m else "", f"{code} {body}".strip() if code > 0 else body)

    @property
    def classification(self) -> str:
        """``success`` (2xx), ``permanent`` (5xx) or ``temporary`` (everything else)."""
        if 200 <= self.code < 300:
            return "success"
        if 500 <= self.code < 600:
            return "permanent"
        return "temporary"

    def as_dict(self) -> dict:
        return {
            "code": self.code,
            "enhanced_status_code": self.enhanced,
            "classification": self.classification,
            "response": self.response,
        }


def session_error(text: str) -> Answer:
    """A failure of the session, not of the message: always temporary (code 0; a server
    answer that caused it stays in the text)."""
    return Answer.from_reply(0, text)


@attrs.frozen
class RelayResult:
    """What one session achieved: the final ``answers`` per recipient (missing for those the
    session ended before settling) and the session ``error`` that ended it early, if any."""

    answers: dict
    error: Answer | None
    remote_mta: str
    tls: bool = False

    def answer_for(self, rcpt: str) -> Answer:
        answer = self.answers.get(rcpt)
        if answer is not None:
            return answer
        return self.error or session_error("the relay session ended before this recipient")


class _DataEncoder:
    """Stored bytes to SMTP DATA: CRLF line ends (a bare LF becomes CRLF) and a leading "."
    doubled, with state across chunks."""

    def __init__(self):
        self.at_line_start = True
        self._cr = b""

    def encode(self, chunk: bytes) -> bytes:
        data = self._cr + chunk
        self._cr = b""
        if data.endswith(b"\r"):
            self._cr, data = b"\r", data[:-1]
        if not data:
            return b""
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self.at_line_start and data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        self.at_line_start = data.endswith(b"\r\n")
        return data

    def flush(self) -> bytes:
        """What is left when the message ends (a final lone CR)."""
        rest, self._cr = self._cr, b""
        if rest:
            self.at_line_start = False
        return rest


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PlaintextAuthRefused(SMTPClientError):
    """We will not send the relay password over an unencrypted connection to another host."""


class RelayClient(ESMTPClient):
    """One session delivering one message to ``recipients``; ``done`` fires with a
    ``RelayResult`` when the connection is closed (it never fails)."""

    _log = Logger()

    def __init__(
        self,
        *,
        identity: str,
        mail_from: str,
        recipients,
        message_file,
        remote_mta: str,
        context=None,
        require_tls: bool = False,
        username: str = "",
        password: str = "",
        allow_plaintext_auth: bool = False,
        timeout: float = 300,
    ):
        secret = password.encode("utf-8") if username else None
        super().__init__(secret, context, identity)
        if username:
            self.registerAuthenticator(PLAINAuthenticator(username.encode("utf-8")))
            self.requireAuthentication = True
        self.requireTransportSecurity = require_tls
        self.timeout = timeout
        self.done = defer.Deferred(lambda _: self.abort())
        self._mail_from = mail_from
        self._recipients = list(recipients)
        self._file = message_file
        self._remote_mta = remote_mta
        self._allow_plaintext_auth = allow_plaintext_auth
        self._asked_from = False
        self._answers: dict = {}
        self._error: Answer | None = None
        self._encoder = _DataEncoder()

    # -- what to send ---------------------------------------------------------------------

    def getMailFrom(self):
        if self._asked_from:
            return None
        self._asked_from = True
        return self._mail_from

    def getMailTo(self):
        return list(self._recipients)

    def getMailData(self):
        return self._file

    def smtpState_data(self, code, resp):
        sender = FileSender()
        d = sender.beginFileTransfer(self._file, self.transport, self.transformChunk)
        d.addCallbacks(self.finishedFileTransfer, lambda f: self.sendError(f.value))
        self._expected = SUCCESS
        self._okresponse = self.smtpState_msgSent

    def transformChunk(self, chunk):
        self.resetTimeout()
        return self._encoder.encode(chunk)

    def finishedFileTransfer(self, lastsent):
        rest = self._encoder.flush()
        if rest:
            self.transport.write(rest)
        self.sendLine(b"." if self._encoder.at_line_start else b"\r\n.")

    # -- AUTH only where the password cannot be read on the way ---------------------------

    def authenticate(self, code, resp, items):
        if self.secret and not self._tlsMode and not self._allow_plaintext_auth:
            self.sendError(
                PlaintextAuthRefused(
                    530, b"5.7.0 refusing to send relay credentials without TLS", self.log.str()
                )
            )
            return
        super().authenticate(code, resp, items)

    # -- outcomes ---------------------------------------------------------------------------

    def sentMail(self, code, resp, numOk, addresses, log):
        if not addresses:
            # MAIL FROM was refused: that answer is every recipient's.
            answer = Answer.from_reply(code, resp)
            for rcpt in self._recipients:
                self._answers[rcpt] = answer
            return
        data_answer = Answer.from_reply(code, resp) if numOk else None
        for rcpt, rcpt_code, rcpt_resp in addresses:
            if isinstance(rcpt, bytes):
                rcpt = rcpt.decode("utf-8", "replace")
            rcpt = str(rcpt)
            if rcpt_code in SUCCESS and data_answer is not None:
                self._answers[rcpt] = data_answer
            else:
                self._answers[rcpt] = Answer.from_reply(rcpt_code, rcpt_resp)

    def sendError(self, exc):
        if self._error is None:
            if isinstance(exc, SMTPClientError):
                text = exc.resp
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "replace")
                self._error = session_error(f"{exc.code} {text}" if exc.code > 0 else str(text))
            else:
                self._error = session_error(str(exc))
        super().sendError(exc)

    def connectionLost(self, reason=ConnectionDone):
        super().connectionLost(reason)
        if self._error is None and len(self._answers) < len(self._recipients):
            why = reason.value if hasattr(reason, "value") else reason
            if isinstance(why, ConnectionDone) or why is ConnectionDone:
                text = "the relay closed the connection"
            else:
                text = f"connection to the relay lost: {_describe(why)}"
            self._error = session_error(text)
        if not self.done.called:
            self.done.callback(
                RelayResult(dict(self._answers), self._error, self._remote_mta, self._tlsMode)
            )

    def abort(self):
        """Drop the connection now (a shutdown, a lost lease): nothing more is sent."""
        if self._error is None:
            self._error = session_error("delivery interrupted")
        if self.transport is not None:
            self.transport.abortConnection()


def _describe(error) -> str:
    text = str(error) or type(error).__name__
    module = type(error).__module__
    if module.startswith(("service_identity", "OpenSSL")):
        return f"TLS failed (certificate not valid for the relay, or handshake refused): {text}"
    return text


def _load_trust(ca_file: str):
    with open(ca_file, "rb") as f:
        pem = f.read()
    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, flags=re.DOTALL
    )
    if not blocks:
        raise ValueError(f"relay.ca_file {ca_file}: no certificate in it")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])


def client_tls_options(relay, host: str):
    """The STARTTLS options for ``host``: verified with service-identity against ``host``
    (trusting ``relay.ca_file`` or the system store) unless ``relay.verify_cert`` is off;
    TLS 1.2 at least either way."""
    if not relay.verify_cert:
        return ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
    trust = _load_trust(relay.ca_file) if relay.ca_file else ssl.platformTrust()
    return ssl.optionsForClientTLS(
        host,
        trustRoot=trust,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


async def deliver_via_relay(
    reactor, relay, *, identity: str, mail_from: str, recipients, message_file, started=None
) -> RelayResult:
    """Send one message through ``relay`` (a ``RelayConfig``) in one session.

    ``started(client)``, when given, is called with the ``RelayClient`` once connected, so the
    caller can ``abort()`` it. Never raises: every failure is in the result.
    """
    host, port = relay.host_port
    remote_mta = host
    try:
        context = client_tls_options(relay, host) if relay.tls != "off" else None
    except Exception as e:
        return RelayResult({}, session_error(f"relay TLS settings: {e}"), remote_mta)
    client = RelayClient(
        identity=identity,
        mail_from=mail_from,
        recipients=recipients,
        message_file=message_file,
        remote_mta=remote_mta,
        context=context,
        require_tls=relay.tls == "required",
        username=relay.username,
        password=relay.password,
        allow_plaintext_auth=is_loopback(host),
        timeout=relay.timeout_seconds,
    )
    endpoint = HostnameEndpoint(reactor, host, port, timeout=relay.timeout_seconds)
    try:
        await connectProtocol(endpoint, client)
    except Exception as e:
        return RelayResult(
            {}, session_error(f"cannot connect to relay {host}:{port}: {e}"), remote_mta
        )
    if started is not None:
        started(client)
    return await client.done
