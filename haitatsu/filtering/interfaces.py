"""The two interfaces a filter plugin implements (docs/plugins.md).

A plugin module (one of the built-ins in ``filters/``, or a module in the operator's
``plugins.directory``) defines, at module level, objects that provide ``IFilterFactory``;
``twisted.plugin.getPlugins(IFilterFactory, package)`` finds them. The config's ``filters``
listing names the factories to use, in order, with their options; the factory validates the
options and builds one ``IFilter`` for the chain. A reload builds a new chain (and so new filters)
from scratch.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface


class IFilterFactory(IPlugin):
    """Builds a filter from its options. Also an ``IPlugin``, so twisted.plugin finds it."""

    name = Attribute(
        'The name the config uses (``filters { new { name = "greylist" } }``): lower case '
        "letters, digits and ``_``, unique among the installed plugins."
    )

    description = Attribute("One line saying what the filter does (shown in errors and docs).")

    def build(options, environment):
        """Return an ``IFilter`` configured by ``options``.

        ``options`` is a read-only mapping of the filter's entry in the config, without the
        keys the chain itself uses (``name``, ``on_error``, ``timeout_seconds``):
        plain JSON values (str, int, float, bool, list, dict). ``environment`` is a
        ``haitatsu.filtering.FilterEnvironment`` (the store, the reactor, the DNS resolver and
        the whole config).

        Raise ``haitatsu.filtering.FilterConfigError`` with a message naming the option when
        ``options`` are wrong: the server refuses to start, or a reload is refused and the
        running chain stays. ``haitatsu.filtering.Options`` helps with the checking. Called in
        the reactor thread at start-up and at every reload: do not block here.
        """


class IFilter(Interface):
    """One configured filter in the chain."""

    name = Attribute("The name of the factory that built it (set by the factory).")

    stages = Attribute(
        "The ``haitatsu.filtering.Stage`` values at which ``check`` is called (a collection). "
        "A stage no filter declares costs nothing."
    )

    def check(stage, context):
        """Look at the connection, transaction, message or recipient and answer.

        ``stage`` is one of ``stages``; ``context`` is the ``FilterContext`` of the SMTP session
        (at ``Stage.DELIVERY``, ``context.target`` is the recipient being delivered). Return a
        ``Verdict``, None (continue), or a Deferred or coroutine of either: ``async def
        check(...)`` works. Never block the reactor: use ``context.resolver`` for DNS, the
        store's Deferreds for SQL and ``deferToThread`` for blocking libraries.

        An exception, or no answer within the filter's ``timeout_seconds``, is handled by the
        filter's ``on_error`` policy (by default a temporary failure: mail never passes by
        accident).
        """
