"""The mail store: SQL for metadata, a blob store for bodies, one code path for every engine.

Only this module writes rows. Each public method is one transaction; delivery leases and stores
the blobs first and commits the metadata in one transaction after, so a failure at any point
leaves nothing visible (an unreferenced blob at worst, which garbage collection removes). How a
message is split into blobs, and why garbage collection never removes a blob a delivery is about
to reference, is in docs/storage.md.

The store is one class, ``MailStore``, written in parts: ``base`` (lifecycle, transactions,
announcements, UID allocation), ``accounts`` (mailboxes, app passwords, throttling, quotas),
``folders``, ``messages``, ``outbound`` (the queue's rows), ``events`` (the event log and
webhook outbox), ``senderrules`` and ``gc``. A new concern gets a
module and a mixin of its own.
"""

from zope.interface import implementer

from haitatsu.interfaces import IMailStore
from haitatsu.storage.store.accounts import AccountsMixin
from haitatsu.storage.store.base import StoreBase
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
from haitatsu.storage.store.events import EventsMixin
from haitatsu.storage.store.folders import FoldersMixin
from haitatsu.storage.store.gc import GarbageMixin
from haitatsu.storage.store.messages import MessagesMixin
from haitatsu.storage.store.outbound import OutboundMixin
from haitatsu.storage.store.senderrules import SenderRulesMixin


@implementer(IMailStore)
class MailStore(
    AccountsMixin,
    FoldersMixin,
    MessagesMixin,
    OutboundMixin,
    EventsMixin,
    SenderRulesMixin,
    GarbageMixin,
    StoreBase,
):
    __doc__ = StoreBase.__doc__


__all__ = [
    "CLAIM_TIMEOUT_SECONDS",
    "DEFAULT_DEDUP_THRESHOLD",
    "DELIVERY_RETRY_DELAYS",
    "MailStore",
    "folder_name",
    "generate_password",
    "hash_password",
    "new_id",
    "verify_password",
]
