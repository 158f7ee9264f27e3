"""The filter chain: interfaces, verdicts, context, chain and plugin registry (docs/plugins.md).

Everything a plugin needs is importable from here::

    from haitatsu.filtering import IFilter, IFilterFactory, Stage, reject, FilterResult
"""

from haitatsu.filtering.chain import (
    DEFAULT_TIMEOUT_SECONDS,
    ChainEntry,
    FilterChain,
    FilterEnvironment,
)
from haitatsu.filtering.context import (
    DeliveryTarget,
    Envelope,
    FilterContext,
    MessageAccess,
    MessageTooLarge,
    Recipient,
    SessionInfo,
)
from haitatsu.filtering.interfaces import IFilter, IFilterFactory
from haitatsu.filtering.options import FilterConfigError, Options
from haitatsu.filtering.verdicts import (
    CONTINUE,
    Action,
    FilterResult,
    Stage,
    Verdict,
    accept,
    continue_,
    discard,
    quarantine,
    reject,
    tempfail,
)

__all__ = [
    "CONTINUE",
    "DEFAULT_TIMEOUT_SECONDS",
    "Action",
    "ChainEntry",
    "DeliveryTarget",
    "Envelope",
    "FilterChain",
    "FilterConfigError",
    "FilterContext",
    "FilterEnvironment",
    "FilterResult",
    "IFilter",
    "IFilterFactory",
    "MessageAccess",
    "MessageTooLarge",
    "Options",
    "Recipient",
    "SessionInfo",
    "Stage",
    "Verdict",
    "accept",
    "continue_",
    "discard",
    "quarantine",
    "reject",
    "tempfail",
]
