"""Sending mail: ``POST /api/v1/mailboxes/:mailbox_id/outbound`` (API.md 1.8).

The request is validated exactly as the original does (400 ``invalid_outbound_message`` with the
reason), turned into a message (a structured body, or ``raw`` as sent) and handed to the same
``SubmissionPipeline`` SMTP submission uses. Where the original answers every pipeline failure
500 ``outbound_failed``, we answer what happened (docs/api.md "Sending mail"): 403
``sender_not_allowed``, 409 ``dkim_key_not_found``, 409 ``mailbox_inactive``, 404
``mailbox_not_found``, 422 ``too_many_recipients``, 429 ``outbound_rate_limited``, 413
``mailbox_over_quota`` and 413 ``message_too_large``.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import os
import tempfile

from twisted.internet.threads import deferToThreadPool

from haitatsu.api.conventions import APIError, RouteTable, data, read_object
from haitatsu.api.messages import message_json
from haitatsu.submission.message import build_structured, header_addresses, parse_address
from haitatsu.submission.pipeline import SubmissionRefused

routes = RouteTable()


def _invalid(message: str) -> APIError:
    return APIError(400, "invalid_outbound_message", message)


def _go_quote(value: str) -> str:
    """Close to Go's ``%q``: a double-quoted string with escapes."""
    return json.dumps(value, ensure_ascii=False)


def _string(body: dict, key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid(f"{key}: must be a string")
    return value


def _addresses(body: dict, key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"{key}: must be an array of strings")
    return value


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def parse_request(body: dict) -> tuple[str, list[str], bytes]:
    """Validate a send request; return the envelope sender, the envelope recipients (to + cc +
    bcc, or for ``raw`` without arrays the To, Cc and Bcc headers) and the message bytes."""
    from_text = _string(body, "from")
    to, cc, bcc = (_addresses(body, k) for k in ("to", "cc", "bcc"))
    subject, text, html, raw = (_string(body, k) for k in ("subject", "text", "html", "raw"))
    if not from_text or (not to and not raw):
        raise _invalid("from and to are required")
    sender = parse_address(from_text)
    if sender is None:
        raise _invalid(f"from: invalid address {_go_quote(from_text)}")
    envelope = []
    for key, values in (("to", to), ("cc", cc), ("bcc", bcc)):
        for value in values:
            address = parse_address(value)
            if address is None:
                raise _invalid(f"{key}: invalid address {_go_quote(value)}")
            envelope.append(address)
    if raw:
        message = raw.encode("utf-8")
        if not envelope:
            headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
                message
            )
            for name in ("to", "cc", "bcc"):
                envelope += header_addresses(headers.get_all(name) or [])
            if not envelope:
                raise _invalid("from and to are required")
        return sender, envelope, message
    if _has_control(subject):
        raise _invalid("subject: must not contain control characters")
    return sender, envelope, build_structured(from_text, to, cc, subject, text, html)


def _write(directory: str, content: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="api-", suffix=".eml", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return path


@routes.route("POST", "/api/v1/mailboxes/<mailbox_id>/outbound", failure="outbound_failed")
async def send(api, request, mailbox_id):
    sender, recipients, message = parse_request(read_object(request))
    config = api.get_config()
    if len(message) > config.max_message_size:
        raise APIError(
            413,
            "message_too_large",
            f"The message exceeds the {config.max_message_size} byte size limit",
        )
    pipeline = api.submission
    pool = api.reactor.getThreadPool()
    path = await deferToThreadPool(api.reactor, pool, _write, pipeline.spool_dir, message)
    try:
        submitted = await pipeline.submit(mailbox_id, sender, recipients, path, config=config)
    except SubmissionRefused as e:
        raise APIError(e.reason.status, e.reason.code, e.reason.message) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return data(request, message_json(submitted.message), status=201)
