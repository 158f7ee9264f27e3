"""Export and import jobs (API.md 1.13): the workers that run them, and the sources imports read.

``JobWorker`` (``service.py``) is the hub's service: loops that claim export and import jobs
with a lease and run them. An export (``exporter.py``) writes every message of a mailbox into a
ZIP spooled on disk and puts it in the blob store under ``exports/<job id>``. An import
(``importer.py``) walks a source's folders and messages (``maildir.py``, ``mbox.py``,
``zipsource.py``, ``imap.py``) and stores each through ``IMailStore.import_message``, with its
flags, internal date and a folder named as haitatsu names it (``folders.py``).
``sources.py`` checks an import request, for the REST API and again for the worker.
"""

from haitatsu.jobs.service import JobWorker

__all__ = ["JobWorker"]
