"""Export jobs: ``POST /mailboxes/:mailbox_id/export``, ``GET /exports``, ``GET /exports/:id``
(API.md 1.13) and ``GET /exports/:id/download`` (our addition: the original has no download,
backends read the object from S3).

The job workers (``haitatsu/jobs``) write the ZIP; these routes queue the job and show it. The
download streams the object from the blob store with a producer, so serving a large export
costs a buffer, not its size, whether the blobs are in a directory or in S3.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.protocols.basic import FileSender

from haitatsu.api import schemas
from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    omit_zero,
    timestamp,
)
from haitatsu.storage.records import now_ns

routes = RouteTable()
_log = Logger()


def export_json(job) -> dict:
    return omit_zero(
        {
            "id": job.id,
            "mailbox_id": job.mailbox_id,
            "status": job.status,
            "object_key": job.object_key,
            "size_bytes": job.size_bytes,
            "locked_by": job.locked_by,
            "locked_until": timestamp(job.locked_until),
            "last_error": job.last_error,
            "expires_at": timestamp(job.expires_at),
            "created_at": timestamp(job.created_at),
            "updated_at": timestamp(job.updated_at),
        }
    )


def _size(f) -> int:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size


@routes.route(
    "POST",
    "/api/v1/mailboxes/<mailbox_id>/export",
    failure="export_create_failed",
    spec={
        "summary": "Queue an export of the mailbox (a ZIP of its messages)",
        "requestBody": {
            "required": False,
            "content": schemas.json_content({"description": "No body is read"}),
        },
        "responses": {"201": schemas.data_response("The queued job", schemas.ref("ExportJob"))},
    },
)
async def create_export(api, request, mailbox_id):
    job = await api.store.create_export_job(mailbox_id)
    return data(request, export_json(job), 201)


list_exports = routes.list_route(
    "/api/v1/exports",
    "list_exports",
    "export_list_failed",
    lambda api, **kw: api.store.list_jobs("export", **kw),
    export_json,
    filters=("mailbox_id",),
    spec=schemas.list_operation("Export jobs", "ExportJob", filters=("mailbox_id",)),
)


async def _get(api, export_id):
    job = await api.store.get_job("export", export_id)
    if job is None:
        raise APIError(404, "export_not_found", "Export not found")
    return job


get_export = routes.get_route(
    "/api/v1/exports/<export_id>",
    "get_export",
    "export_not_found",
    _get,
    export_json,
    not_found=("export_not_found", "Export not found"),
    spec={
        "summary": "An export job",
        "responses": {"200": schemas.data_response("The job", schemas.ref("ExportJob"))},
    },
)


@routes.route(
    "GET",
    "/api/v1/exports/<export_id>/download",
    failure="export_download_failed",
    spec={
        "summary": "The export's ZIP (our addition)",
        "responses": {
            "200": {
                "description": "The ZIP: messages/<message_id>.eml for every message",
                "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            },
            "409": schemas.error_response("The export is not completed (export_not_ready)"),
            "410": schemas.error_response("The export expired (export_expired)"),
        },
    },
)
async def download_export(api, request, export_id):
    job = await _get(api, export_id)
    if job.status != "completed" or not job.object_key:
        raise APIError(409, "export_not_ready", f"The export is {job.status}, not completed")
    if job.expires_at is not None and job.expires_at <= now_ns():
        raise APIError(410, "export_expired", "The export expired")
    try:
        blob = await api.store.blobs.open_object(job.object_key)
    except KeyError:
        raise APIError(410, "export_expired", "The export's file is gone") from None
    finished = request.notifyFinish()
    gone = []
    finished.addErrback(gone.append)
    try:
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/zip")
        request.setHeader(
            b"Content-Disposition", f'attachment; filename="{job.id}.zip"'.encode("ascii")
        )
        request.setHeader(b"Content-Length", str(_size(blob)).encode("ascii"))
        try:
            await FileSender().beginFileTransfer(blob, request)
            return None
        except CancelledError:
            raise
        except Exception:
            if not gone:
                _log.failure("streaming export {export_id} failed", export_id=export_id)
                request.loseConnection()
    finally:
        blob.close()
    await finished
    raise CancelledError()
