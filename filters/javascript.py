"""``javascript``: decide with a script of your own, run in an embedded QuickJS sandbox.

The script defines ``function check(message)``. At each of the filter's ``stages`` (DATA by
default) it is called with the message's metadata (the same object the ``webhook`` filter
POSTs: ``stage``, ``session``, ``envelope``, ``message.headers``, ``results``, ``score``, ...)
and returns a verdict object (``{action: "reject", code: 550, text: "..."}``; ``null`` or
``undefined`` is a plain continue), as the webhook's answer.

The sandbox is QuickJS (PyPI ``quickjs``): no file system, network, timers or modules, just the
language. Each call runs in a thread of the reactor's pool, in a QuickJS context of that thread
(contexts are not thread-safe; each thread makes its own from the script once and keeps it).
``time_limit_ms`` bounds a call and ``memory_limit_bytes`` a context; a call that goes over,
throws, or returns something that is not a verdict is a failure of the filter (its ``on_error``
applies) and the thread's context is thrown away, so the next call starts clean. QuickJS
measures the time limit in CPU time of the whole process (C ``clock()``): on a busy server a
script may be stopped sooner than the limit, never later.

The script is run once in a fresh context when the chain is built (at start-up and reload): a
syntax error, an exception at the top level, or no ``check`` function refuses the
configuration with the error and its line.

Options: ``script`` (required; ``read("check.js").text`` in Pkl reads it from a file next to
the config), ``stages`` (``["data"]``), ``time_limit_ms`` (100), ``memory_limit_bytes``
(33554432), ``include_headers`` (true).
"""

from __future__ import annotations

import json
import re
import threading

from twisted.internet import threads
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import FilterConfigError, IFilter, IFilterFactory, Options, Stage
from haitatsu.filtering.metadata import context_metadata, verdict_from_answer

try:
    import quickjs
except ImportError:  # pragma: no cover - a dependency, but say so clearly if it is missing
    quickjs = None

#: The stack QuickJS may use per call (deep recursion is a RangeError, not a crash).
MAX_STACK_BYTES = 256 * 1024

# Calls check() with the metadata (as JSON text) and hands back JSON text ("" for nothing).
_CALL = """(function (text) {
  const answer = check(JSON.parse(text));
  if (answer === undefined || answer === null) return "";
  if (typeof answer.then === "function") throw new TypeError("check() must not be async");
  return JSON.stringify(answer);
})"""

_AT = re.compile(r"at (?:\S+ \()?<input>:(\d+)")


class JavaScriptError(Exception):
    """The script threw, ran out of time or memory, or answered nonsense."""


def describe(error) -> str:
    """A QuickJS exception as one line: ``TypeError: ... (line 3)``."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    m = _AT.search(text)
    return f"{first} (line {m.group(1)})" if m else first


class Sandbox:
    """The script's QuickJS contexts, one per thread that calls it."""

    def __init__(self, source: str, time_limit: float, memory_limit: int):
        self.source = source
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self._local = threading.local()

    def new_context(self):
        """A context with the limits set and the script run; ``(context, call)``."""
        ctx = quickjs.Context()
        ctx.set_memory_limit(self.memory_limit)
        ctx.set_time_limit(self.time_limit)
        ctx.set_max_stack_size(MAX_STACK_BYTES)
        ctx.eval(self.source)
        if ctx.eval("typeof check") != "function":
            raise JavaScriptError("the script defines no function check(message)")
        return ctx, ctx.eval(_CALL)

    def call(self, text: str) -> str:
        """``check(message)`` in this thread's context (made on first use): JSON text."""
        entry = getattr(self._local, "entry", None)
        try:
            if entry is None:
                entry = self._local.entry = self.new_context()
            answer = entry[1](text)
        except quickjs.JSException as e:
            self._local.entry = None  # the next call gets a fresh context
            raise JavaScriptError(describe(e)) from None
        except BaseException:
            self._local.entry = None
            raise
        if not isinstance(answer, str):
            raise JavaScriptError(f"check() gave {answer!r}")
        return answer


@implementer(IFilter)
class JavaScriptFilter:
    name = "javascript"

    def __init__(self, sandbox: Sandbox, stages, reactor, include_headers: bool):
        self.sandbox = sandbox
        self.stages = tuple(stages)
        self.reactor = reactor
        self.include_headers = include_headers

    async def check(self, stage, context):
        metadata = context_metadata(stage, context, headers=self.include_headers)
        text = json.dumps(metadata, ensure_ascii=False)
        pool = self.reactor.getThreadPool()
        answer = await threads.deferToThreadPool(self.reactor, pool, self.sandbox.call, text)
        if not answer:
            return None
        try:
            return verdict_from_answer(json.loads(answer), default_reason="javascript")
        except ValueError as e:
            raise JavaScriptError(f"check() answered {answer[:200]}: {e}") from None


@implementer(IPlugin, IFilterFactory)
class JavaScriptFactory:
    name = "javascript"
    description = "a script of your own in a QuickJS sandbox with time and memory limits"

    def build(self, options, environment):
        opts = Options(self.name, options)
        source = opts.string("script")
        names = opts.strings("stages", default=["data"])
        stages = []
        for name in names:
            try:
                stages.append(Stage(name))
            except ValueError:
                known = ", ".join(s.value for s in Stage)
                raise opts.error("stages", f"unknown stage {name!r} (stages: {known})") from None
        if not stages:
            raise opts.error("stages", "name at least one stage")
        time_limit = opts.integer("time_limit_ms", default=100, minimum=1, maximum=60000)
        memory = opts.integer("memory_limit_bytes", default=32 * 1024 * 1024, minimum=1024 * 1024)
        include_headers = opts.boolean("include_headers", default=True)
        opts.done()
        if quickjs is None:
            raise FilterConfigError(
                "filters[javascript]: the Python package quickjs is not installed "
                "(pip install quickjs)"
            )
        sandbox = Sandbox(source, time_limit / 1000.0, memory)
        try:
            sandbox.new_context()
        except quickjs.JSException as e:
            raise opts.error("script", describe(e)) from None
        except JavaScriptError as e:
            raise opts.error("script", str(e)) from None
        return JavaScriptFilter(sandbox, stages, environment.reactor, include_headers)


javascript = JavaScriptFactory()
