"""Outbound jobs of a mailbox: ``GET /api/v1/mailboxes/:mailbox_id/outbound`` (our addition,
docs/api.md "Outbound jobs"). ``POST`` on the same path sends (API.md 1.8); this lists what
was queued, with each recipient's state and every delivery attempt, newest job first, paginated
like every list."""

from __future__ import annotations

from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    omit_zero,
    page_of,
    page_response,
    timestamp,
)

routes = RouteTable()


def recipient_json(recipient) -> dict:
    return omit_zero(
        {
            "rcpt": recipient.rcpt,
            "status": recipient.status,
            "code": recipient.code,
            "enhanced_status_code": recipient.enhanced_status_code,
            "response": recipient.response,
            "updated_at": timestamp(recipient.updated_at),
        },
        keep=("rcpt", "status"),
    )


def attempt_json(attempt) -> dict:
    return omit_zero(
        {
            "id": attempt.id,
            "attempt": attempt.attempt,
            "node": attempt.node,
            "result": attempt.result,
            "started_at": timestamp(attempt.started_at),
            "finished_at": timestamp(attempt.finished_at),
        }
    )


def outbound_job_json(job) -> dict:
    return omit_zero(
        {
            "id": job.id,
            "message_id": job.message_id,
            "mailbox_id": job.mailbox_id,
            "trace_id": job.trace_id,
            "mail_from": job.mail_from,
            "route": job.route,
            "status": job.status,
            "attempts": job.attempts,
            "next_attempt_at": timestamp(job.next_attempt_at),
            "locked_by": job.locked_by,
            "locked_until": timestamp(job.locked_until),
            "last_error": job.last_error,
            "bounce_message_id": job.dsn_message_id,
            "created_at": timestamp(job.created_at),
            "updated_at": timestamp(job.updated_at),
            "recipients": [recipient_json(r) for r in job.recipients],
            "attempt_log": [attempt_json(a) for a in job.attempt_log],
        },
        keep=("recipients", "attempt_log"),
    )


@routes.route("GET", "/api/v1/mailboxes/<mailbox_id>/outbound", failure="outbound_list_failed")
async def list_outbound(api, request, mailbox_id):
    page = page_of(request)
    if await api.store.get_mailbox(mailbox_id) is None:
        raise APIError(404, "mailbox_not_found", "Mailbox not found")
    rows = await api.store.list_outbound_jobs(mailbox_id, limit=page.limit + 1, before=page.before)
    return page_response(request, rows, page, outbound_job_json)
