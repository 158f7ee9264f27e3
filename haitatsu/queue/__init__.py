"""The outbound queue: workers that relay queued mail, retry it, and bounce what fails
(``service``), the relay client (``relay``), delivery status notifications (``dsn``) and VERP
bounces received at the MX (``bounces``). docs/queue.md explains it for operators."""

from haitatsu.queue.bounces import BounceHandler, parse_verp, verp_address
from haitatsu.queue.service import OutboundQueue, retry_delay_seconds, retry_window_seconds

__all__ = [
    "BounceHandler",
    "OutboundQueue",
    "parse_verp",
    "retry_delay_seconds",
    "retry_window_seconds",
    "verp_address",
]
