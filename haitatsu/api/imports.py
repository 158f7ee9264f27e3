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


list_imports = routes.list_route(
    "/api/v1/imports",
    "list_imports",
    "import_list_failed",
    lambda api, **kw: api.store.list_jobs("import", **kw),
    import_json,
    filters=("mailbox_id",),
    spec=schemas.list_operation("Import jobs", "ImportJob", filters=("mailbox_id",)),
)

get_import = routes.get_route(
    "/api/v1/imports/<import_id>",
    "get_import",
    "import_not_found",
    lambda api, import_id: api.store.get_job("import", import_id),
    import_json,
    not_found=("import_not_found", "Import not found"),
    spec={
        "summary": "An import job",
        "responses": {"200": schemas.data_response("The job", schemas.ref("ImportJob"))},
    },
)
