"""The message structure parser: one pass over a message at delivery time yields everything that
IMAP FETCH and the REST API need, so that ENVELOPE and BODYSTRUCTURE never open the blob and
``BODY[1.2]`` is served as a byte range of it.

``parse_file(path)`` streams a stored message with bounded memory; ``parse_bytes(data)`` parses
one held in memory; ``MessageParser`` can be fed while a message is being received. All return a
``ParsedMessage``, whose ``envelope``, ``body`` and ``bodystructure`` are IMAP wire strings ready
to send (as UTF-8) and whose ``parts`` map IMAP part specifiers to byte offsets: see
``ParsedMessage`` for the keys.
"""

from haitatsu.mime._parser import MessageParser, ParsedMessage, parse_bytes, parse_file

__all__ = ["MessageParser", "ParsedMessage", "parse_bytes", "parse_file"]
