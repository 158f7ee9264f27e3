"""Mail authentication for the built-in ``spf``, ``dkim``, ``dmarc`` and ``arc`` filters.

The filter plugins (``filters/``) hold the plumbing (options, verdicts, results); the checks
themselves live here, one module per standard, so that they can be tested without a chain:

- ``spf``: RFC 7208 through pyspf, its DNS answered by our resolver;
- ``bodyhash``: DKIM body hashes (RFC 6376 3.4) computed while the message streams past;
- ``dkim``: DKIM verification of every signature, and ARC (RFC 8617) verification and sealing,
  through dkimpy given the header section and our body hashes;
- ``dmarc``: RFC 7489 records, organizational domains and identifier alignment.

Everything here that does DNS or reads the message blocks: call it in a thread, with a
``haitatsu.dns.BlockingResolver``.
"""
