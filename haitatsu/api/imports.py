"""Import jobs: ``POST /mailboxes/:mailbox_id/import``, ``GET /imports``, ``GET /imports/:id``
(API.md 1.13).

The body is ``{"source_type": "zip" | "maildir" | "imap" | "mbox", "source": {...}}``
(``mbox`` is our addition); ``haitatsu.jobs.sources.check_source`` says what each needs. The
job workers run the import; these routes queue it and show it, with the source's secrets
(``password``, ``secret``, ``token``, ``access_key``, ``secret_key``) shown as
``"[redacted]"``.
"""

from __future__ import annotations

from haitatsu.api import schemas
from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    omit_zero,
    page_of,
    page_response,
    query,
    read_object,
    timestamp,
)
from haitatsu.jobs.sources import SourceInvalid, check_source, redacted

routes = RouteTable()


def import_json(job) -> dict:
    return omit_zero(
        {
            "id": job.id,
            "mailbox_id": job.mailbox_id,
            "source_type": job.source_type,
            "source": redacted(job.source),
            "status": job.status,
            "imported_count": job.imported_count,
            "locked_by": job.locked_by,
            "locked_until": timestamp(job.locked_until),
            "last_error": job.last_error,
            "created_at": timestamp(job.created_at),
            "updated_at": timestamp(job.updated_at),
        }
    )


@routes.route(
    "POST",
    "/api/v1/mailboxes/<mailbox_id>/import",
    failure="import_create_failed",
    spec={
        "summary": "Queue an import into the mailbox",
        "requestBody": {
            "required": True,
            "content": schemas.json_content(schemas.ref("ImportRequest")),
        },
        "responses": {"201": schemas.data_response("The queued job", schemas.ref("ImportJob"))},
    },
)
async def create_import(api, request, mailbox_id):
    body = read_object(request)
    try:
        source = check_source(
            body.get("source_type"), body.get("source"), api.get_config().imports.root
        )
    except SourceInvalid as e:
        raise APIError(400, e.code, e.message) from None
    job = await api.store.create_import_job(mailbox_id, body["source_type"], source)
    return data(request, import_json(job), 201)


@routes.route(
    "GET",
    "/api/v1/imports",
    failure="import_list_failed",
    spec=schemas.list_operation("Import jobs", "ImportJob", filters=("mailbox_id",)),
)
async def list_imports(api, request):
    page = page_of(request)
    rows = await api.store.list_jobs(
        "import",
        mailbox_id=query(request, "mailbox_id") or None,
        limit=page.limit + 1,
        before=page.before,
    )
    return page_response(request, rows, page, import_json)


@routes.route(
    "GET",
    "/api/v1/imports/<import_id>",
    failure="import_not_found",
    spec={
        "summary": "An import job",
        "responses": {"200": schemas.data_response("The job", schemas.ref("ImportJob"))},
    },
)
async def get_import(api, request, import_id):
    job = await api.store.get_job("import", import_id)
    if job is None:
        raise APIError(404, "import_not_found", "Import not found")
    return data(request, import_json(job))
