"""Mail submission: SMTP on 587/465 with AUTH, and the pipeline it shares with the REST API's
``POST /mailboxes/:id/outbound`` (docs/submission.md)."""

from haitatsu.submission.pipeline import Reason, SubmissionPipeline, SubmissionRefused
from haitatsu.submission.server import SubmissionESMTP, SubmissionFactory

__all__ = [
    "Reason",
    "SubmissionESMTP",
    "SubmissionFactory",
    "SubmissionPipeline",
    "SubmissionRefused",
]
