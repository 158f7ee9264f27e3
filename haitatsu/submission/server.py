"""The submission server (RFC 6409; ports 587 and 465): the MX's ESMTP session with AUTH.

``SubmissionESMTP`` subclasses the MX session (``haitatsu.smtp.server.InboundESMTP``), so it
frames lines, pipelines, spools DATA and replies exactly as the MX does. What differs:

* AUTH PLAIN and LOGIN (RFC 4954) with the mailbox's address and an app password of scope
  ``smtp``, through the ``ThrottledPortal`` shared with IMAP and POP3 (API.md 5.3).
* With TLS configured, AUTH waits for TLS (``530 5.7.0 Must issue a STARTTLS command first``)
  and is not advertised before it; ``tls_active`` is the flag TLS sets (at once on the implicit
  TLS port).
* MAIL, RCPT and DATA need AUTH (``530 5.7.0 Authentication required``). MAIL FROM must be an
  address the mailbox may send as, with a DKIM key for its domain; the hourly and daily limits
  are checked there too, and the recipient limit at RCPT. Any address is a valid recipient.
* At the end of DATA the message goes through ``SubmissionPipeline`` (the same code as
  ``POST /mailboxes/:id/outbound``): 250 only once the Sent copy, the local deliveries and the
  outbound job are committed.
"""

from __future__ import annotations

import base64
import binascii

import attrs
from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import IRealm, Portal
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from haitatsu.auth import AppPasswordChecker, LoginThrottle, ThrottledPortal
from haitatsu.interfaces import StorageUnavailable
from haitatsu.smtp.envelope import Refused, Reply, parse_mail, parse_rcpt
from haitatsu.smtp.server import (
    HELO_FIRST,
    TEMPFAIL,
    TOO_MANY_RECIPIENTS,
    InboundESMTP,
    InboundSMTPFactory,
)
from haitatsu.submission.pipeline import (
    SENDER_NOT_ALLOWED,
    SubmissionPipeline,
    SubmissionRefused,
    recipient_limit,
)

AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication response")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
MECHANISMS = (b"PLAIN", b"LOGIN")


class ISubmitter(Interface):
    """Who a submission session logged in as."""

    mailbox_id = Attribute("The mailbox's id.")


@implementer(ISubmitter)
@attrs.frozen
class Submitter:
    mailbox_id: str


@implementer(IRealm)
class SubmissionRealm:
    """Turns the checker's avatar id (the mailbox id) into an ``ISubmitter``."""

    def requestAvatar(self, avatarId, mind, *interfaces):
        if ISubmitter not in interfaces:
            raise NotImplementedError("SubmissionRealm only provides ISubmitter")
        mailbox_id = avatarId.decode("ascii") if isinstance(avatarId, bytes) else avatarId
        return ISubmitter, Submitter(mailbox_id), lambda: None


class SubmissionESMTP(InboundESMTP):
    """One submission session; see the module docstring."""

    _log = Logger()

    def __init__(
        self,
        config,
        store,
        clock,
        spool_dir: str,
        portal: ThrottledPortal,
        pipeline: SubmissionPipeline,
        implicit_tls: bool = False,
        extra_extensions=None,
        tls=None,
        spool=None,
    ):
        super().__init__(config, store, clock, spool_dir, extra_extensions, tls=tls, spool=spool)
        self.portal = portal
        self.pipeline = pipeline
        #: True once the connection is encrypted (from the start on the implicit TLS port).
        self.tls_active = implicit_tls
        #: The mailbox this session authenticated as, None before AUTH.
        self.mailbox_id: str | None = None
        self.username = ""
        self._sasl = None

    @property
    def tls_required(self) -> bool:
        """AUTH must wait for TLS: TLS is configured and this connection is not encrypted
        (neither the implicit-TLS port nor after STARTTLS)."""
        return self.config.tls.enabled and not (self.tls_active or self.secure)

    def extensions(self):
        ext = super().extensions()
        if not self.tls_required and self.mailbox_id is None:
            ext[b"AUTH"] = list(MECHANISMS)
        # STARTTLS (RFC 3207) comes from the MX's session: it is listed while a TLS service is
        # set and the connection is not encrypted, and resets the EHLO state when it starts.
        return ext

    def lookupMethod(self, command):
        """AUTH is a command here even when EHLO does not list it (before TLS, after a login),
        so the client learns why (530, 503) instead of "not implemented"."""
        verb = command.decode("ascii") if isinstance(command, bytes) else command
        if verb.upper() == "AUTH":
            return self.ext_AUTH
        return super().lookupMethod(command)

    def lineReceived(self, line):
        if self._sasl is not None:
            step, self._sasl = self._sasl, None
            self._sasl_response(step, line)
        else:
            super().lineReceived(line)

    def line_too_long(self):
        if self._sasl is not None:
            self._sasl = None
            self.reply(AUTH_LINE_TOO_LONG)
        else:
            super().line_too_long()

    # -- AUTH (RFC 4954) -----------------------------------------------------------------------

    def ext_AUTH(self, rest):
        if self.helo_name is None:
            self.reply(HELO_FIRST)
            return
        if self.tls_required:
            self.reply(STARTTLS_FIRST)
            return
        if self.mailbox_id is not None:
            self.reply(Reply(503, "5.5.1", "already authenticated"))
            return
        if self.sender is not None:
            self.reply(Reply(503, "5.5.1", "AUTH not permitted during a mail transaction"))
            return
        words = rest.split()
        if not words or len(words) > 2:
            self.reply(Reply(501, "5.5.4", "syntax: AUTH mechanism [initial-response]"))
            return
        mechanism = words[0].upper()
        if mechanism not in MECHANISMS:
            self.reply(Reply(504, "5.5.4", "unrecognized authentication type"))
            return
        initial = words[1] if len(words) == 2 else None
        if mechanism == b"PLAIN":
            if initial is None:
                self._challenge("plain", b"")
            else:
                self._sasl_response("plain", initial)
        elif initial is None:
            self._challenge("login-user", b"VXNlcm5hbWU6")  # "Username:"
        else:
            self._sasl_response("login-user", initial)

    def _challenge(self, step, challenge: bytes):
        self._sasl = step
        self.sendCode(334, challenge)

    def _sasl_response(self, step, line: bytes):
        if line.strip() == b"*":
            self.reply(AUTH_CANCELLED)
            return
        if line == b"=":
            decoded = b""
        else:
            try:
                decoded = base64.b64decode(line.strip(), validate=True)
            except (binascii.Error, ValueError):
                self.reply(AUTH_BAD_BASE64)
                return
        if step == "plain":
            parts = decoded.split(b"\0")
            if len(parts) != 3:
                self.reply(AUTH_MALFORMED)
                return
            authzid, username, password = parts
            if authzid and authzid.lower() != username.lower():
                # API.md 5.3: acting for someone else is not offered.
                self._log.info(
                    "submission AUTH refused: authorization identity differs from the username",
                    remote_ip=self.remote_ip,
                )
                self.reply(AUTH_FAILED)
                return
            self._run_pending(self._login(username, password))
        elif step == "login-user":
            self.username = decoded.decode("utf-8", "replace")
            self._challenge("login-password", b"UGFzc3dvcmQ6")  # "Password:"
        else:
            self._run_pending(self._login(self.username.encode("utf-8"), decoded))

    async def _login(self, username: bytes, password: bytes):
        creds = credentials.UsernamePassword(username, password)
        try:
            _, avatar, _ = await self.portal.login(
                creds, None, ISubmitter, remote_ip=self.remote_ip
            )
        except (UnauthorizedLogin, UnhandledCredentials):
            self._log.info("submission AUTH failed", remote_ip=self.remote_ip)
            self.reply(AUTH_FAILED)
            return
        except Exception:
            self._log.failure("submission AUTH could not be checked", remote_ip=self.remote_ip)
            self.reply(AUTH_TEMPFAIL)
            return
        self.mailbox_id = avatar.mailbox_id
        self.username = username.decode("utf-8", "replace")
        self._log.info(
            "submission login for {mailbox_id}",
            mailbox_id=self.mailbox_id,
            remote_ip=self.remote_ip,
        )
        self.reply(AUTH_OK)

    # -- the transaction ---------------------------------------------------------------------

    def _reset_transaction(self):
        super()._reset_transaction()
        self.mailbox = None

    def _check_mail_params(self, params):
        # RFC 4954 5: AUTH=<mailbox> on MAIL is accepted; who sends is what AUTH established.
        super()._check_mail_params({k: v for k, v in params.items() if k != "AUTH"})

    def do_MAIL(self, rest):
        if self.helo_name is None:
            self.reply(HELO_FIRST)
            return
        if self.mailbox_id is None:
            self.reply(AUTH_REQUIRED)
            return
        if self.sender is not None:
            self.reply(Reply(503, "5.5.1", "sender already specified"))
            return
        try:
            sender, params = parse_mail(rest, self.host)
            self._check_mail_params(params)
        except Refused as e:
            reply = e.reply
            if reply.enhanced == "5.1.7":
                reply = Reply(553, "5.1.7", "bad sender address syntax")
            self.reply(reply)
            return
        if not sender:
            self.reply(SENDER_NOT_ALLOWED.reply)
            return
        self._run_pending(self._check_sender(sender))

    async def _check_sender(self, sender: str):
        try:
            mailbox = await self.pipeline.check_sender(self.mailbox_id, sender)
            await self.pipeline.check_rate(mailbox, self.config)
        except SubmissionRefused as e:
            self._log.info(
                "submission MAIL FROM {sender} refused: {reason}",
                sender=sender,
                reason=str(e),
                mailbox_id=self.mailbox_id,
                remote_ip=self.remote_ip,
            )
            self.reply(e.reason.reply)
            return
        except StorageUnavailable as e:
            self._log.warn("checking sender {sender} failed: {error}", sender=sender, error=str(e))
            self.reply(TEMPFAIL)
            return
        except Exception:
            self._log.failure("checking sender {sender} failed", sender=sender)
            self.reply(TEMPFAIL)
            return
        self.sender = sender
        self.mailbox = mailbox
        self.recipients = []
        self._rcpt_attempts = 0
        self.reply(Reply(250, "2.1.0", "sender OK"))

    def do_RCPT(self, rest):
        if self.helo_name is None:
            self.reply(HELO_FIRST)
            return
        if self.mailbox_id is None:
            self.reply(AUTH_REQUIRED)
            return
        if self.sender is None:
            self.reply(Reply(503, "5.5.1", "need MAIL before RCPT"))
            return
        try:
            address, params = parse_rcpt(rest, self.host)
        except Refused as e:
            reply = e.reply
            if reply.enhanced == "5.1.3":
                reply = Reply(553, "5.1.3", "bad recipient address syntax")
            self.reply(reply)
            return
        if params:
            self.reply(Reply(555, "5.5.4", f"parameter {next(iter(params))} not supported"))
            return
        self._rcpt_attempts += 1
        if address.lower() not in (r.lower() for r in self.recipients):
            limit = recipient_limit(self.mailbox, self.config)
            if limit and len(self.recipients) >= limit:
                self.reply(TOO_MANY_RECIPIENTS)
                return
            self.recipients.append(address)
        self.reply(Reply(250, "2.1.5", "recipient OK"))

    def do_DATA(self, rest):
        if self.helo_name is not None and self.mailbox_id is None:
            self.reply(AUTH_REQUIRED)
            return
        super().do_DATA(rest)

    def _spool_prelude(self, trace_id: str, added: bytes = b"") -> bytes:
        return b""

    async def _deliver(self, spool, recipients, trace_id: str, size: int, sender=""):
        try:
            spool.close()
            await self.pipeline.submit(
                self.mailbox_id,
                sender,
                recipients,
                spool.path,
                trace_id=trace_id,
                config=self.config,
            )
        except SubmissionRefused as e:
            self._log.info(
                "submission {trace_id} refused: {reason}",
                trace_id=trace_id,
                reason=str(e),
                mailbox_id=self.mailbox_id,
                remote_ip=self.remote_ip,
            )
            self.reply(e.reason.reply)
            return
        except StorageUnavailable as e:
            self._log.warn(
                "tempfail {trace_id}: storage unavailable: {error}",
                trace_id=trace_id,
                error=str(e),
                mailbox_id=self.mailbox_id,
                remote_ip=self.remote_ip,
            )
            self.reply(TEMPFAIL)
            return
        except Exception:
            self._log.failure(
                "tempfail {trace_id}: submission failed",
                trace_id=trace_id,
                mailbox_id=self.mailbox_id,
                remote_ip=self.remote_ip,
            )
            self.reply(TEMPFAIL)
            return
        finally:
            spool.discard()
        self.reply(Reply(250, "2.0.0", f"OK {trace_id}"))


class SubmissionFactory(InboundSMTPFactory):
    """Builds a ``SubmissionESMTP`` per connection with the configuration live at that moment.

    ``throttle`` is the ``LoginThrottle`` shared with IMAP and POP3 (the hub passes one);
    ``connections`` the connection counter its two listeners share;
    ``implicit_tls`` marks the port-465 listener, whose connections are encrypted from the
    start. ``pipeline`` defaults to one on the same store, config and spool directory.
    """

    protocol = SubmissionESMTP

    def __init__(
        self,
        get_config,
        store,
        reactor,
        spool_dir: str,
        throttle: LoginThrottle | None = None,
        implicit_tls: bool = False,
        pipeline: SubmissionPipeline | None = None,
        extra_extensions=None,
        tls=None,
        connections=None,
    ):
        super().__init__(
            get_config,
            store,
            reactor,
            spool_dir,
            extra_extensions,
            tls=tls,
            connections=connections,
        )
        # limits.max_connections_per_ip applies here too (API.md 4); the MX's message rate
        # does not: submitted mail has the mailbox's own outbound limits.
        self.message_rate = None
        self.throttle = throttle if throttle is not None else LoginThrottle(store, reactor)
        self.portal = ThrottledPortal(
            Portal(SubmissionRealm(), [AppPasswordChecker(store, "smtp")]), self.throttle
        )
        self.pipeline = pipeline or SubmissionPipeline(store, get_config, reactor, self.spool_dir)
        self.implicit_tls = implicit_tls

    def protocol_kwargs(self) -> dict:
        kwargs = super().protocol_kwargs()
        del kwargs["bounces"]  # VERP bounce addresses are the MX's business
        del kwargs["filters"]  # the filter chain is the MX's (DESIGN.md, "Filters")
        kwargs.update(portal=self.portal, pipeline=self.pipeline, implicit_tls=self.implicit_tls)
        return kwargs
