"""Checking a filter's options: every factory does it, so plugins get a helper.

    def build(self, options, environment):
        opts = Options(self.name, options)
        limit = opts.integer("max_bytes", default=10_000_000, minimum=1)
        action = opts.choice("action", ["record", "reject"], default="record")
        opts.done()   # unknown keys are errors: a typo never passes silently

Every error is a ``FilterConfigError`` naming the filter and the option.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class FilterConfigError(Exception):
    """A filter's configuration is wrong; the message names the filter and the option."""


_MISSING = object()


class Options:
    """Typed access to one filter's options; ``done()`` refuses the keys nobody asked for."""

    def __init__(self, filter_name: str, options: Mapping, prefix: str = ""):
        self.filter_name = filter_name
        self._prefix = prefix
        self._options = dict(options)
        self._seen: set[str] = set()

    def _error(self, key: str, message: str) -> FilterConfigError:
        return FilterConfigError(f"filters[{self.filter_name}].{self._prefix}{key}: {message}")

    def _get(self, key, default):
        self._seen.add(key)
        value = self._options.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise self._error(key, "required")
            return _MISSING
        return value

    def has(self, key: str) -> bool:
        return key in self._options

    def raw(self, key: str, default=None):
        """The value as configured (any JSON type), ``default`` when absent."""
        value = self._get(key, default)
        return default if value is _MISSING else value

    def integer(self, key: str, default=_MISSING, minimum=None, maximum=None) -> int:
        value = self._get(key, default)
        if value is _MISSING:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(key, f"expected an Int, got {value!r}")
        self._range(key, value, minimum, maximum)
        return value

    def number(self, key: str, default=_MISSING, minimum=None, maximum=None) -> float:
        value = self._get(key, default)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._error(key, f"expected a Number, got {value!r}")
        self._range(key, value, minimum, maximum)
        return float(value)

    def boolean(self, key: str, default=_MISSING) -> bool:
        value = self._get(key, default)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self._error(key, f"expected a Boolean, got {value!r}")
        return value

    def string(self, key: str, default=_MISSING) -> str:
        value = self._get(key, default)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self._error(key, f"expected a String, got {value!r}")
        return value

    def choice(self, key: str, choices: Sequence[str], default=_MISSING) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self._error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def strings(self, key: str, default=_MISSING) -> list[str]:
        value = self._get(key, default)
        if value is _MISSING:
            return list(default)
        if value == {}:
            return []  # an empty Pkl `Dynamic {}` renders as an object
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._error(key, f"expected a Listing of Strings, got {value!r}")
        return list(value)

    def listing(self, key: str, default=_MISSING) -> list:
        """A Listing of any values (each checked by the caller)."""
        value = self._get(key, default)
        if value is _MISSING:
            return list(default)
        if value == {}:
            return []
        if not isinstance(value, list):
            raise self._error(key, f"expected a Listing, got {value!r}")
        return list(value)

    def block(self, key: str, default=_MISSING) -> Options:
        """A nested object, as ``Options`` of its own (call its ``done()`` too)."""
        value = self._get(key, default)
        if value is _MISSING:
            value = default if default is not _MISSING else {}
        if not isinstance(value, Mapping):
            raise self._error(key, f"expected an object, got {value!r}")
        return Options(self.filter_name, value, prefix=f"{self._prefix}{key}.")

    def error(self, key: str, message: str) -> FilterConfigError:
        """A ``FilterConfigError`` for ``key`` with the filter's name, for checks of your own."""
        return self._error(key, message)

    def done(self) -> None:
        """Raise for any option nobody asked for (a typo, or an option of another filter)."""
        unknown = sorted(set(self._options) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._seen)) or "none"
            where = f".{self._prefix.rstrip('.')}" if self._prefix else ""
            raise FilterConfigError(
                f"filters[{self.filter_name}]{where}: unknown option {', '.join(unknown)} "
                f"(options: {known})"
            )

    def _range(self, key, value, minimum, maximum):
        if minimum is not None and value < minimum:
            raise self._error(key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self._error(key, f"must be <= {maximum}, got {value}")
