"""The seams of haitatsu. Every interface with two implementations or a plugin lives here.

Methods documented as returning a value return a ``Deferred`` firing with it unless they say they
are synchronous. Records are the frozen classes of ``haitatsu.storage.records``.
"""

from zope.interface import Attribute, Interface


class StorageUnavailable(Exception):
    """The metadata database or the blob store could not complete an operation.

    Protocols answer this with a temporary failure (SMTP 451 4.3.0, IMAP ``NO [UNAVAILABLE]``,
    HTTP 503); nothing half-written is visible afterwards.
    """


class OverQuota(Exception):
    """Storing the message would take every mailbox it is for over its own quota or over its
    domain's quota. (When only some are, the store skips those and stores the message.)"""


class OutboundLimitExceeded(Exception):
    """The mailbox has sent as many messages as its hourly or daily outbound limit allows."""


class Conflict(Exception):
    """A unique or foreign-key constraint refused the change."""


class FolderExists(Conflict):
    """A folder of that name (or of a name a rename would produce) already exists."""


class NoSuchFolder(LookupError):
    """The folder named or addressed does not exist (any more)."""


class FolderProtected(Exception):
    """System folders cannot be deleted (nor renamed, unless the caller allows it)."""


class FolderHasChildren(Exception):
    """The folder has folders below it and the caller asked not to delete such a folder."""


class InvalidFolderName(ValueError):
    """The name is empty, has an empty level (``a//b``), control characters, or would put a
    folder under itself."""


class IBlobStore(Interface):
    """Content-addressed message bodies. A blob's key is the lowercase hex SHA-256 of its
    content (a store may map it to an object name of its own, with a prefix or directories):
    the mail store computes keys before it puts a blob, to lease them first."""

    def put_file(path, sha256=None, size=None, link=False):
        """Store the file at ``path``; fire with a ``BlobRef`` (key, sha256, size).

        Identical content is stored once. The blob is durable (fsynced, or acknowledged by the
        remote store) before the Deferred fires. Errors fire ``StorageUnavailable``.
        ``sha256`` and ``size``, when the caller computed them from the file already (the mail
        store does, to lease the key), are trusted instead of reading the file again. ``link``:
        the caller will not write to the file again (it may remove it), so a store may give the
        file itself the blob's name (a hard link) instead of copying it.
        """

    def open(key):
        """Fire with a readable binary file object positioned at 0, which the caller closes.

        Memory use does not depend on the blob's size (a local file, or a spooled download).
        """

    def read(key, start=0, length=None):
        """Fire with ``length`` bytes (all if None) from ``start``: for small ranges only."""

    def delete(key):
        """Remove a blob; fire with None. Missing blobs are not an error."""

    def list_keys(start_after="", limit=1000):
        """Fire with up to ``limit`` ``(key, modified_ns)`` pairs in ascending key order, keys
        greater than ``start_after``; fewer than ``limit`` means the listing is complete.
        ``modified_ns`` is when the object was last written (nanoseconds since the epoch), which
        garbage collection compares with its grace period (S3: ListObjectsV2 with StartAfter)."""

    def check():
        """Fire with None if the store is reachable and writable, else fail with the reason."""

    def put_object(name, path):
        """Store the file at ``path`` as the named object ``name`` (not content-addressed: an
        export's ZIP, ``exports/<job id>``), replacing one of that name; fire with its size once
        durable. ``name`` is ``/``-separated levels of letters, digits, ``.``, ``_`` and ``-``
        (``blobs.check_object_name``); named objects never mix with blobs, and garbage
        collection never lists them."""

    def open_object(name):
        """Fire with a readable binary file of the named object, positioned at 0, which the
        caller closes; ``KeyError`` if there is none. Memory does not depend on its size."""

    def delete_object(name):
        """Remove the named object; fire with None. A missing object is not an error."""


class IChangeBus(Interface):
    """Tells IMAP IDLE, SSE and workers that a mailbox changed. In-process for SQLite,
    LISTEN/NOTIFY for PostgreSQL."""

    def subscribe(mailbox_id, callback):
        """Call ``callback(change: dict)`` for every change of ``mailbox_id``; return an
        unsubscribe callable (synchronous)."""

    def publish(mailbox_id, change):
        """Announce ``change`` (a JSON-able dict with at least ``type`` and ``folder_id``)."""

    def publish_in(txn, mailbox_id, change):
        """Announce ``change`` as part of the store transaction ``txn``: subscribers (on every
        node) hear it once, and only if the transaction commits. May return an awaitable, which
        the store awaits inside the transaction."""

    def open():
        """Connect (a Deferred or coroutine); the store opens its bus after the database."""

    def close():
        """Disconnect; subscribers hear nothing more."""


class IMailStore(Interface):
    """Accounts, folders and messages: metadata in SQL, bodies in an ``IBlobStore``."""

    blobs = Attribute("The IBlobStore holding message bodies.")
    changes = Attribute("The IChangeBus this store publishes to after each commit.")

    # -- mailboxes -----------------------------------------------------------------------

    def create_mailbox(
        primary_address, status="active", quota_bytes=0, outbound_limits=None, spam_thresholds=None
    ):
        """Create a mailbox with the six system folders; fire with the ``Mailbox``.
        ``Conflict`` if the address is taken."""

    def get_mailbox(mailbox_id):
        """Fire with the ``Mailbox`` or None."""

    def find_mailbox(address):
        """Fire with the ``Mailbox`` whose primary address equals ``address`` ignoring case,
        or None (whatever its status)."""

    def list_mailboxes(status=None, limit=50, before=None):
        """Fire with up to ``limit`` mailboxes ordered ``created_at DESC, id DESC``, starting
        after the ``(created_at, id)`` pair ``before`` when given."""

    def update_mailbox(mailbox_id, **fields):
        """Change ``status``, ``quota_bytes``, ``outbound_limits`` or ``spam_thresholds``;
        fire with the ``Mailbox`` or None if missing."""

    def delete_mailbox(mailbox_id):
        """Soft delete (status ``deleted``, app passwords revoked); fire with it or None."""

    def restore_mailbox(mailbox_id):
        """Undo a soft delete (app passwords stay revoked); fire with the Mailbox or None."""

    def hard_delete_mailbox(mailbox_id, deleted_before=None):
        """Delete the mailbox, its folders, labels and placements, and purge its messages no
        other mailbox holds (blobs are left to garbage collection); with ``deleted_before``
        only if it is in status ``deleted`` since before then. Fire with True if deleted."""

    def purge_deleted_mailboxes(deleted_before, batch=50, should_continue=None):
        """Hard-delete every mailbox in status ``deleted`` since before ``deleted_before``;
        fire with ``{"purged", "kept"}``."""

    def resolve_recipient(address):
        """Resolve an RCPT address (API.md 5.2 steps 2-7: exact mailbox, exact route, the
        ``+tag``-less base as mailbox then route, pattern routes, the catch-all); fire with a
        ``Recipient`` or None. ``Recipient.mailbox_ids`` are the active mailboxes with room;
        when every one is full, ``over_quota`` says which quota ("mailbox", "domain")."""

    def may_send_as(mailbox_id, address):
        """Fire with whether the mailbox may send as ``address``: its primary address, or the
        source of an active route whose destinations include it (API.md 1.4), without case."""

    # -- quotas ----------------------------------------------------------------------------

    def recompute_usage(mailbox_id):
        """Set the mailbox's ``used_bytes`` to the sum of its live placements' sizes; fire with
        the new value, or None if there is no such mailbox."""

    def get_domain(name):
        """Fire with the ``Domain`` called ``name`` (any case), or None if it has no row."""

    def list_domains(limit=50, before=None):
        """Fire with up to ``limit`` domains ordered ``created_at DESC, name DESC``, starting
        after the ``(created_at, name)`` pair ``before`` when given."""

    def set_domain_quota(name, quota_bytes):
        """Create the domain or change its quota (0: unlimited); fire with
        ``(Domain, created)``."""

    # -- app passwords -------------------------------------------------------------------

    def create_app_password(mailbox_id, name, scopes):
        """Generate a password, store its argon2id hash; fire with ``(AppPassword, plaintext)``."""

    def list_app_passwords(mailbox_id, limit=50, before=None):
        """Fire with the mailbox's app passwords, revoked ones included, newest first."""

    def revoke_app_password(password_id):
        """Fire with the revoked ``AppPassword`` or None."""

    def authenticate(address, password, scope):
        """Fire with the active ``Mailbox`` if ``password`` is a live app password of the mailbox
        at ``address`` carrying ``scope``; otherwise None. Updates ``last_used_at``."""

    # -- login throttling (API.md 5.3) ----------------------------------------------------
    # Times are nanoseconds since the epoch; the policy (window, limit, lockout) is the caller's.

    def record_login_failure(remote_ip, now, window, max_failures, lockout):
        """Count a failed login from ``remote_ip``; fire with the end of its lockout if
        ``max_failures`` within ``window`` have locked it (for ``lockout``), else None."""

    def login_locked(remote_ip, now):
        """Fire with the end of ``remote_ip``'s lockout if it is locked at ``now``, else None."""

    def clear_login_failures(remote_ip):
        """Forget ``remote_ip``'s failures (a login succeeded)."""

    def prune_login_failures(before):
        """Delete throttling state last touched before ``before`` and not locked; fire with
        the number of rows removed."""

    # -- filter state shared by nodes (greylist, rate_limit; docs/storage.md) -------------
    # Times are nanoseconds since the epoch, from the caller's clock.

    def greylist_check(
        client, sender, recipient, now, delay, retry_window, allow_for, auto_allow_passes=0
    ):
        """Record an attempt of a (client network, sender, recipient) triplet; fire with a
        ``GreylistAnswer`` (``state``, ``allowed``, ``retry_after``)."""

    def rate_limit_take(bucket, capacity, per_second, now):
        """Take a token from a bucket (created full); fire with a ``RateAnswer``."""

    def prune_filter_state(greylist_before, rate_limits_before):
        """Delete greylist rows and token buckets idle since then; fire with the count."""

    # -- Sieve (docs/sieve.md) --------------------------------------------------------------

    def list_sieve_scripts(mailbox_id):
        """Fire with the mailbox's ``SieveScript`` list, by name."""

    def get_sieve_script(mailbox_id, name):
        """Fire with the script called ``name``, or None."""

    def active_sieve_script(mailbox_id):
        """Fire with the mailbox's active script, or None."""

    def put_sieve_script(mailbox_id, name, content, activate=False):
        """Create or replace a script; fire with ``(script, created)``."""

    def activate_sieve_script(mailbox_id, name):
        """Make ``name`` the active script ("" or None: none); ``NoSuchScript``."""

    def delete_sieve_script(mailbox_id, name):
        """Delete a script; ``NoSuchScript``, ``ScriptIsActive``."""

    def rename_sieve_script(mailbox_id, old, new):
        """Rename a script; ``NoSuchScript``, ``Conflict`` when ``new`` exists."""

    def sieve_space_used(mailbox_id):
        """Fire with ``(count, bytes)`` of the mailbox's scripts."""

    def vacation_should_respond(mailbox_id, handle, sender, now, period):
        """Record a vacation response unless one went to ``sender`` for ``handle`` within
        ``period`` (ns); fire with whether to send it."""

    def prune_vacation_responses(before):
        """Forget vacation responses whose period ended before ``before``."""

    def get_vacation_setting(mailbox_id):
        """Fire with the mailbox's ``VacationSetting`` (the ``vacation`` filter), or None."""

    def put_vacation_setting(setting):
        """Create or replace a ``VacationSetting``; fire with it as stored."""

    def delete_vacation_setting(mailbox_id):
        """Remove the mailbox's vacation setting; fire with whether there was one."""

    def queue_generated(spool_path, mailbox_id, mail_from, recipients, trace_id):
        """Store a message a Sieve script sends and queue it on the mailbox's behalf; fire
        with the job id."""

    def mailbox_spam_thresholds(mailbox_ids):
        """Fire with ``{mailbox_id: spam_thresholds}`` for the mailboxes that have any."""

    def inbound_filter_data(mailbox_ids, domains=()):
        """What the default filter chain reads about a message's recipients, in one read
        transaction: fire with an ``InboundFilterData`` (``sender_rules_for``,
        ``mailbox_spam_thresholds`` and each mailbox's active Sieve script)."""

    def duplicate_check(mailbox_id, key, trace_id, now, window):
        """Whether Message-ID digest ``key`` reached the mailbox within ``window`` ns: fire
        with ``"duplicate"``, or ``"new"`` after claiming it for delivery ``trace_id`` (a
        claim whose delivery never stored its message does not make a duplicate)."""

    def prune_duplicates(before):
        """Delete the duplicate filter's Message-IDs first seen before ``before`` (ns)."""

    # -- folders -------------------------------------------------------------------------

    def list_folders(mailbox_id):
        """Fire with the mailbox's ``Folder`` list ordered by name (INBOX first)."""

    def get_folder(mailbox_id, name):
        """Fire with the ``Folder`` called ``name`` (INBOX matched ignoring case) or None."""

    def get_folder_by_id(folder_id):
        """Fire with the ``Folder`` or None."""

    def create_folder(mailbox_id, name, special_use="", subscribed=True, create_parents=True):
        """Create a folder (``/`` separates levels; missing parents are created too unless
        ``create_parents`` is false) with a UIDVALIDITY no earlier folder of the mailbox had;
        fire with the new ``Folder``. ``FolderExists``, ``InvalidFolderName``."""

    def delete_folder(folder_id, refuse_children=True):
        """Remove a folder: its live messages are soft-deleted and their size released from
        the quota. Fire with the removed ``Folder`` or None if it did not exist.
        ``FolderProtected`` for system folders, ``FolderHasChildren`` when it has folders below
        it and ``refuse_children`` is true."""

    def rename_folder(folder_id, new_name, allow_system=False):
        """Rename a folder and every folder below it (missing parents of the new name are
        created); UIDVALIDITY and UIDs stay. Renaming INBOX follows RFC 3501: a new folder
        takes INBOX's messages and INBOX stays, empty. Fire with the renamed (or new)
        ``Folder``, or None if it did not exist. ``FolderExists``, ``InvalidFolderName``,
        ``FolderProtected`` (other system folders, unless ``allow_system``)."""

    def set_folder_subscribed(folder_id, subscribed):
        """Set the folder's ``subscribed`` flag; fire with the ``Folder`` or None."""

    def copy_messages(folder_id, uids, target_folder_id):
        """Place the live messages with these UIDs in the target folder of the same mailbox
        as well, with new UIDs, the same flags and internal date, sharing the stored message
        (no blob is copied); the quota counts the copies. Fire with a ``CopyResult``.
        ``NoSuchFolder`` (target gone), ``OverQuota`` (nothing copied)."""

    def move_messages(folder_id, uids, target_folder_id):
        """Move the live messages with these UIDs to the target folder with new UIDs (flags
        kept, quota unchanged); fire with a ``CopyResult``. ``NoSuchFolder``."""

    # -- messages ------------------------------------------------------------------------

    def deliver(
        spool_path,
        deliveries,
        trace_id,
        auth_results=None,
        internal_date=None,
        received=(),
        spam_score=0.0,
    ):
        """Store the message in ``spool_path`` once and place it per ``Delivery``.

        ``auth_results`` and ``spam_score`` are what the filters found (API.md 2.1).

        ``received`` lists the inbound routing results (``events.Received``); their
        ``message.received`` events are written in the delivery's transaction, so a failed
        delivery writes none.

        Large leaf parts may be stored as blobs of their own (docs/storage.md); reading the
        message back through ``open_message`` returns it byte for byte either way. The blobs are
        stored first, then one transaction inserts the message row, allocates UIDs
        and MODSEQs, updates quotas and writes events. Fires with the list of
        ``MailboxMessage`` after the commit, then publishes the changes. Fails with
        ``StorageUnavailable`` (nothing visible) or ``OverQuota``.
        """

    def list_folder_messages(folder_id):
        """Fire with every live ``MailboxMessage`` of the folder, ordered by UID."""

    def get_messages(folder_id, uids):
        """Fire with ``[(MailboxMessage, MessageInfo)]`` for the given UIDs, ordered by UID."""

    def folder_summaries(folder_id):
        """Fire with a ``MessageSummary`` (UID, MODSEQ, flags, internal date, size) for every
        live placement of the folder, ordered by UID: an IMAP session's view after SELECT."""

    def message_summaries(folder_id, uids, fields=()):
        """Fire with a ``MessageSummary`` (UID, MODSEQ, flags, internal date, size, and the
        message ``fields`` named: envelope, body, bodystructure, header_size, subject,
        text_body_extract, html_body_extract, blob_key, layout, parts) for each live placement
        among ``uids``, ordered by UID: IMAP's bulk FETCH and SEARCH."""

    def subject_candidates(folder_id, needle, label=False):
        """Fire with a ``MessageSummary`` carrying ``subject`` for each live placement of the
        folder (``label``: of the label ``folder_id``) whose subject may contain the casefolded
        ``needle``, ordered by UID: every one that does, and possibly others (IMAP's SEARCH
        SUBJECT tests them)."""

    def get_message_view(mailbox_message_id):
        """Fire with ``(MailboxMessage, MessageInfo)`` or None (soft-deleted rows are None)."""

    def list_messages(mailbox_id, folder_id=None, read=None, flagged=None, limit=50, before=None):
        """Fire with ``[(MailboxMessage, MessageInfo)]`` of live messages, newest first."""

    def store_flags(folder_id, uids, flags, mode):
        """Set (``mode`` "="), add ("+") or remove ("-") IMAP flags on the given UIDs; fire
        with the changed ``MailboxMessage`` list."""

    def open_message(info):
        """Fire with a readable, seekable binary file of the whole message ``info`` (a
        ``MessageInfo``) exactly as received, positioned at 0; the caller closes it. However the
        store split the message into blobs, this is the only way protocols read it whole."""

    def read_message(info, start=0, length=None):
        """Fire with ``length`` bytes (to the end if None) of the message from ``start``: for
        small ranges (headers, MIME headers, search text)."""

    def read_message_ranges(requests):
        """Fire with, for each ``(info, [(start, length), ...])`` of ``requests``, the bytes
        of the message ``info`` (``MessageInfo`` or ``MessageSummary``) at each range: what
        SEARCH BODY/TEXT read, many messages at once."""

    def purge_message(message_id):
        """Delete a message row and its placements for good when none is live any more and no
        outbound job still has to send it (finished jobs keep their rows, ``message_id``
        NULL), and drop one reference from each of its blobs; fire with True if purged."""

    def purge_expired_messages(
        deleted_before_ns, created_before_ns, batch=200, should_continue=None
    ):
        """Purge every message whose placements were all soft-deleted before
        ``deleted_before_ns`` and that was stored before ``created_before_ns`` (API.md 5.7);
        fire with ``{"purged", "kept"}``."""

    def collect_garbage(grace_seconds=86400, batch=200, should_continue=None):
        """Remove unreferenced blobs older than ``grace_seconds`` (rows with refcount 0, and
        objects with no row); never one a delivery in flight is about to reference. Fire with
        counts: ``{"unreferenced", "orphans", "bytes"}``."""

    def expunge(folder_id, uids=None):
        """Remove the folder's messages flagged ``\\Deleted`` (only those in ``uids`` if given):
        moved to Trash, or soft-deleted when the folder is Trash. Fire with the removed UIDs."""

    def changed_since(folder_id, modseq):
        """Fire with the folder's live ``MailboxMessage`` rows whose MODSEQ is above
        ``modseq`` (new messages, flag changes), ordered by UID. RFC 7162 CONDSTORE."""

    def vanished_since(folder_id, modseq):
        """Fire with the UIDs that left the folder (expunge, move, POP3 deletion) at a MODSEQ
        above ``modseq``, ascending. RFC 7162 QRESYNC."""

    def vanished_report(folder_id, modseq):
        """Fire with ``VanishedReport(uids, complete, uid_next, pruned_modseq)``: the UIDs that
        left above ``modseq`` and whether that list is complete (``modseq`` at or above the
        folder's pruned horizon)."""

    def prune_vanished(older_than_ns, should_continue=None):
        """Drop vanished UIDs recorded before ``older_than_ns``, raising each folder's pruned
        horizon; fire with ``{"folders", "uids"}``."""

    def folder_delta(folder_id, modseq):
        """Fire with ``FolderDelta(folder, changed, vanished, complete)``: the folder as it is
        now (None when deleted), then its live rows with a MODSEQ above ``modseq`` (by UID) and
        the UIDs that left it above ``modseq`` (ascending), in one read. What an IMAP session
        needs to bring its view up to date; costs the number of changes, not the folder's
        size. Below the pruned horizon: every live row, ``complete`` False."""

    def folder_counts(folder_id):
        """Fire with ``FolderCounts(messages, unseen, size, deleted, deleted_size, last_uid)``
        over the folder's live messages (IMAP STATUS)."""

    def store_flags_unchanged_since(folder_id, uids, flags, mode, unchanged_since):
        """``store_flags`` that leaves alone every message whose MODSEQ is above
        ``unchanged_since``; fire with ``ConditionalStore(changed, modified)``."""

    def deliver_batch(items, trace_id):
        """Deliver ``(spool_path, Delivery, internal_date or None)`` items in one transaction:
        all are stored or none (``OverQuota``, ``ValueError`` for a missing folder). Fire with
        the placed ``MailboxMessage`` of each, in order. IMAP MULTIAPPEND."""

    def delete_messages(folder_id, uids, to_trash=True):
        """Remove the folder's live messages with these UIDs regardless of flags (POP3 DELE):
        moved to Trash, or soft-deleted with the quota released when ``to_trash`` is false or
        the folder is Trash. Fire with the removed UIDs."""

    def search_messages(mailbox_id, terms, folder_id=None, limit=50, before=None):
        """Full-text search over subject, addresses and the text/html extracts (web-search
        syntax: words, ``"phrases"``, ``OR``, ``-word``). Fire with
        ``[(MailboxMessage, MessageInfo)]`` of live matches, newest first, paged like
        ``list_messages``. Words are stemmed (English), so "meeting" finds "meetings"."""

    # -- submission and DKIM (docs/submission.md) -------------------------------------------

    def submit(
        spool_path,
        mailbox_id,
        mail_from,
        local_deliveries,
        remote_recipients,
        trace_id,
        per_hour=0,
        per_day=0,
    ):
        """Store a finished outgoing message in one transaction: Sent copy (``\\Seen``),
        local INBOX placements, the outbound job for remote recipients. Fire with a
        ``Submitted``; ``OverQuota`` (Sent copy), ``OutboundLimitExceeded``."""

    def create_dkim_key(domain, selector, algorithm, private_key, public_key):
        """Store a DKIM key pair; ``Conflict`` if ``(domain, selector)`` exists."""

    def get_dkim_key(key_id):
        """Fire with the ``DkimKey`` or None."""

    def list_dkim_keys(limit=50, before=None):
        """Fire with ``DkimKey`` records, newest first, paged like ``list_mailboxes``."""

    def signing_key(domain):
        """Fire with the newest active ``DkimKey`` of ``domain``, or None."""

    def check():
        """Fire with None if the database is reachable and migrations are current."""
