"""The inbound SMTP server (MX). ``InboundSMTPFactory`` is what a listener serves."""

from haitatsu.smtp.server import InboundESMTP, InboundSMTPFactory

__all__ = ["InboundESMTP", "InboundSMTPFactory"]
