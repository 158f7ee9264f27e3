"""The mail store: SQL for metadata, a blob store for bodies, one code path for every engine.

Only this module writes rows. Each public method is one transaction; delivery leases and stores
the blobs first and commits the metadata in one transaction after, so a failure at any point
leaves nothing visible (an unreferenced blob at worst, which garbage collection removes). How a
message is split into blobs, and why garbage collection never removes a blob a delivery is about
to reference, is in docs/storage.md.

The store is one class, ``MailStore``, written in parts: ``base`` (lifecycle, transactions,
announcements, UID allocation), ``accounts`` (mailboxes, app passwords, throttling, quotas),
``folders``, ``messages``, ``summaries`` (light rows for IMAP's bulk FETCH and SEARCH),
``sync`` (CONDSTORE/QRESYNC: changes since a MODSEQ), ``batch`` (MULTIAPPEND), ``outbound``
(the queue's rows) and ``gc``; for the REST API ``routes`` (with RCPT
resolution and send-as), ``rules`` (run at delivery), ``labels`` (and ``label_views``: a label
as IMAP's ``Labels/<name>`` folder), ``message_ops``,
``folder_ops`` and ``audit``; ``bounces`` (VERP bounces received); ``submission``
(send-as and storing outgoing mail) and ``dkim`` (signing keys); ``events`` (the event log and
webhook outbox) and ``senderrules``; ``filterstate`` (greylisting and rate limits the filters
share across nodes) and ``filterdata`` (mailboxes' Junk thresholds, the duplicate filter's
Message-IDs); ``sieve`` (Sieve scripts and vacation responses); ``jobs`` (export and import
jobs and their leases) and ``importing``
(storing an import's messages). A new concern gets a module and a mixin of its own.
"""

from zope.interface import implementer

from haitatsu.interfaces import IMailStore
from haitatsu.storage.store.accounts import AccountsMixin
from haitatsu.storage.store.audit import AuditMixin
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.batch import BatchMixin
from haitatsu.storage.store.bounces import BouncesMixin
from haitatsu.storage.store.common import (
    CLAIM_TIMEOUT_SECONDS,
    DEFAULT_DEDUP_THRESHOLD,
    DELIVERY_RETRY_DELAYS,
    folder_name,
    generate_password,
    hash_password,
    new_id,
    verify_password,
)
from haitatsu.storage.store.dkim import DkimMixin
from haitatsu.storage.store.events import EventsMixin
from haitatsu.storage.store.filterdata import FilterDataMixin
from haitatsu.storage.store.filterstate import FilterStateMixin
from haitatsu.storage.store.folder_ops import FolderOpsMixin
from haitatsu.storage.store.folders import FoldersMixin
from haitatsu.storage.store.gc import GarbageMixin
from haitatsu.storage.store.importing import ImportingMixin, ImportTargetGone
from haitatsu.storage.store.jobs import JobFence, JobLeaseLost, JobsMixin
from haitatsu.storage.store.label_views import LabelViewsMixin
from haitatsu.storage.store.labels import (
    LabelsMixin,
    NoSuchLabel,
    NoSuchMailbox,
    NoSuchMessage,
    WrongMailbox,
)
from haitatsu.storage.store.message_ops import MessageOpsMixin, MessageQuery, UnknownSearchName
from haitatsu.storage.store.messages import MessagesMixin
from haitatsu.storage.store.outbound import OutboundMixin
from haitatsu.storage.store.routes import InvalidRoute, RoutesMixin
from haitatsu.storage.store.rules import RulesMixin
from haitatsu.storage.store.senderrules import SenderRulesMixin
from haitatsu.storage.store.sieve import NoSuchScript, ScriptIsActive, SieveMixin
from haitatsu.storage.store.submission import SubmissionMixin
from haitatsu.storage.store.summaries import SummariesMixin
from haitatsu.storage.store.sync import SyncMixin


@implementer(IMailStore)
class MailStore(
    AccountsMixin,
    FoldersMixin,
    MessagesMixin,
    SummariesMixin,
    SyncMixin,
    BatchMixin,
    OutboundMixin,
    BouncesMixin,
    SubmissionMixin,
    DkimMixin,
    EventsMixin,
    SenderRulesMixin,
    FilterStateMixin,
    SieveMixin,
    FilterDataMixin,
    JobsMixin,
    ImportingMixin,
    GarbageMixin,
    # The REST API's resources (API.md 1.4-1.9):
    RoutesMixin,
    RulesMixin,
    LabelsMixin,
    LabelViewsMixin,
    MessageOpsMixin,
    FolderOpsMixin,
    AuditMixin,
    StoreBase,
):
    __doc__ = StoreBase.__doc__


__all__ = [
    "CLAIM_TIMEOUT_SECONDS",
    "DEFAULT_DEDUP_THRESHOLD",
    "DELIVERY_RETRY_DELAYS",
    "ImportTargetGone",
    "InvalidRoute",
    "JobFence",
    "JobLeaseLost",
    "MailStore",
    "MessageQuery",
    "NoSuchLabel",
    "NoSuchMailbox",
    "NoSuchMessage",
    "NoSuchScript",
    "ScriptIsActive",
    "UnknownSearchName",
    "WrongMailbox",
    "folder_name",
    "generate_password",
    "hash_password",
    "new_id",
    "verify_password",
]
