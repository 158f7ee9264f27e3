"""Finding filter plugins and building the chain the config asks for.

Plugins are found with ``twisted.plugin.getPlugins(IFilterFactory, package)`` in two packages:
the built-ins (``filters/``, installed as ``haitatsu.filters``) and the operator's
``plugins.directory``. That directory is not put on ``sys.path`` (its modules could then shadow
any top-level module, ``email`` or ``json``); it becomes the ``__path__`` of a package of its own,
``haitatsu_plugins``, so its modules are importable only as ``haitatsu_plugins.<name>``. A
directory or module anyone may write to is refused, as is a module that fails to import: the
error names the file. A module changed since it was imported is imported again at the next
reload.

``Filtering`` owns the live chain for the hub: it builds it at start-up (an error stops the
start) and again on every reload (an error refuses the reload and the running chain stays).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import stat
import sys
import types
import warnings
from types import MappingProxyType

from twisted.logger import Logger
from twisted.plugin import getPlugins

from haitatsu.config.model import ConfigError
from haitatsu.dns import Resolver
from haitatsu.filtering.chain import (
    DEFAULT_TIMEOUT_SECONDS,
    ChainEntry,
    FilterChain,
    FilterEnvironment,
)
from haitatsu.filtering.interfaces import IFilterFactory
from haitatsu.filtering.options import FilterConfigError
from haitatsu.filtering.verdicts import Stage

BUILTIN_PACKAGE = "haitatsu.filters"
#: The package the operator's plugin directory is imported as.
PLUGIN_PACKAGE = "haitatsu_plugins"

_log = Logger()

#: ``{module name: (mtime_ns, size)}`` of the plugin modules imported from the directory.
_imported: dict[str, tuple[int, int]] = {}


def builtin_package() -> types.ModuleType:
    """``haitatsu.filters``: installed, or ``filters/`` beside ``haitatsu/`` in a checkout."""
    try:
        return importlib.import_module(BUILTIN_PACKAGE)
    except ModuleNotFoundError as e:
        if e.name != BUILTIN_PACKAGE:
            raise
    import haitatsu

    root = os.path.dirname(os.path.dirname(os.path.abspath(haitatsu.__file__)))
    path = os.path.join(root, "filters")
    spec = importlib.util.spec_from_file_location(
        BUILTIN_PACKAGE, os.path.join(path, "__init__.py"), submodule_search_locations=[path]
    )
    if spec is None:
        raise FilterConfigError(f"the built-in filters are missing ({path})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[BUILTIN_PACKAGE] = module
    spec.loader.exec_module(module)
    haitatsu.filters = module
    return module


def _check_writable_by_others(path: str) -> None:
    mode = os.stat(path).st_mode
    if mode & stat.S_IWOTH and not (stat.S_ISDIR(mode) and mode & stat.S_ISVTX):
        raise FilterConfigError(
            f"plugins.directory: {path} may be written by any user; refusing to load code "
            "from it (chmod o-w)"
        )


def plugin_package(directory: str) -> types.ModuleType:
    """The package whose ``__path__`` is ``directory``, with every module in it imported
    (so an import error is reported here, with its file) and stale ones imported again."""
    if not os.path.isdir(directory):
        raise FilterConfigError(f"plugins.directory: {directory} is not a directory")
    _check_writable_by_others(directory)
    package = sys.modules.get(PLUGIN_PACKAGE)
    if package is None or list(getattr(package, "__path__", ())) != [directory]:
        _forget_plugin_modules()
        package = types.ModuleType(PLUGIN_PACKAGE, f"Filter plugins from {directory}")
        spec = importlib.machinery.ModuleSpec(PLUGIN_PACKAGE, None, is_package=True)
        spec.submodule_search_locations = [directory]
        package.__spec__ = spec
        package.__path__ = [directory]
        package.__package__ = PLUGIN_PACKAGE
        # twisted.python.modules (under getPlugins) treats a module as a package only when
        # its __file__ is an existing __init__.py, then lists the modules of its __path__. The
        # directory need not have one (nor be writable to get one): this package's stands in.
        package.__file__ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py")
        sys.modules[PLUGIN_PACKAGE] = package
    names = []
    for entry in sorted(os.listdir(directory)):
        base, ext = os.path.splitext(entry)
        if ext != ".py" or not base.isidentifier() or base == "__init__":
            continue
        path = os.path.join(directory, entry)
        _check_writable_by_others(path)
        names.append((f"{PLUGIN_PACKAGE}.{base}", path))
    present = {name for name, _ in names}
    for name in list(_imported):
        if name not in present:
            _forget(name)
    for name, path in names:
        info = os.stat(path)
        stamp = (info.st_mtime_ns, info.st_size)
        if name in sys.modules and _imported.get(name) != stamp:
            _forget(name)
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception as e:
                _forget(name)
                raise FilterConfigError(
                    f"plugins.directory: {path} failed to import: {type(e).__name__}: {e}"
                ) from None
            _imported[name] = stamp
    importlib.invalidate_caches()
    return package


def _forget(name: str) -> None:
    sys.modules.pop(name, None)
    _imported.pop(name, None)


def _forget_plugin_modules() -> None:
    for name in list(sys.modules):
        if name == PLUGIN_PACKAGE or name.startswith(PLUGIN_PACKAGE + "."):
            del sys.modules[name]
    _imported.clear()


def discover(directory: str = "") -> dict:
    """``{name: IFilterFactory}`` of the built-ins and of the plugin ``directory`` (if any).
    Two factories with one name are an error (a plugin cannot replace a built-in silently)."""
    packages = [builtin_package()]
    if directory:
        packages.append(plugin_package(directory))
    factories: dict = {}
    for package in packages:
        with warnings.catch_warnings():
            # twisted.python.modules warns about a package not found on sys.path, which is
            # exactly what the plugin package is meant to be.
            warnings.simplefilter("ignore")
            found = list(getPlugins(IFilterFactory, package))
        for factory in found:
            name = getattr(factory, "name", None)
            if not isinstance(name, str) or not name:
                raise FilterConfigError(f"a filter factory in {package.__name__} has no name")
            if name in factories and factories[name] is not factory:
                raise FilterConfigError(
                    f"two filter plugins are called {name!r}: "
                    f"{_origin(factories[name])} and {_origin(factory)}"
                )
            factories[name] = factory
    return factories


def _origin(factory) -> str:
    return getattr(type(factory), "__module__", "?")


def build_chain(specs, environment: FilterEnvironment, factories: dict) -> FilterChain:
    """The chain for ``specs`` (the config's ``filters``); ``FilterConfigError`` naming the
    entry for an unknown name or options its factory refuses."""
    entries = []
    for i, spec in enumerate(specs):
        factory = factories.get(spec.name)
        if factory is None:
            raise FilterConfigError(
                f"filters[{i}]: no filter called {spec.name!r} "
                f"(installed: {', '.join(sorted(factories)) or 'none'})"
            )
        try:
            built = factory.build(MappingProxyType(dict(spec.options)), environment)
        except FilterConfigError:
            raise
        except Exception as e:
            raise FilterConfigError(
                f"filters[{i}] ({spec.name}): {type(e).__name__}: {e}"
            ) from None
        stages = getattr(built, "stages", None)
        if not callable(getattr(built, "check", None)) or stages is None:
            raise FilterConfigError(
                f"filters[{i}] ({spec.name}): build() returned {built!r}, not an IFilter"
            )
        try:
            stages = frozenset(Stage(s) for s in stages)
        except ValueError as e:
            raise FilterConfigError(f"filters[{i}] ({spec.name}): {e}") from None
        entries.append(
            ChainEntry(
                name=spec.name,
                filter=built,
                stages=stages,
                timeout=spec.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
                on_error=spec.on_error,
            )
        )
    return FilterChain(entries, clock=environment.reactor, resolver=environment.resolver)


class Filtering:
    """The live filter chain of a server: ``current`` (what new SMTP sessions use), rebuilt
    on reload through ``prepare_reload`` (a ``ConfigWatcher`` reload check)."""

    _log = Logger()

    def __init__(self, store, reactor, config):
        self.store = store
        self.reactor = reactor
        self.resolver = Resolver.from_config(config.dns, reactor)
        self.current: FilterChain = self.build(config)

    def get_chain(self) -> FilterChain:
        return self.current

    def build(self, config) -> FilterChain:
        """The chain ``config`` describes; ``ConfigError`` (with the reason) if it cannot be."""
        resolver = self.resolver
        if not resolver.same_settings(config.dns):
            resolver = Resolver.from_config(config.dns, self.reactor)
        environment = FilterEnvironment(self.store, self.reactor, resolver, config)
        try:
            return build_chain(config.filters, environment, discover(config.plugins.directory))
        except FilterConfigError as e:
            raise ConfigError(str(e)) from None
        except OSError as e:
            raise ConfigError(f"plugins.directory: {e}") from None

    async def prepare_reload(self, new):
        chain = self.build(new)

        def commit():
            old, self.current = self.current, chain
            self.resolver = chain.resolver
            self._log.info(
                "filter chain rebuilt: {filters}", filters=" ".join(chain.names) or "(empty)"
            )
            old.retire()

        return commit
