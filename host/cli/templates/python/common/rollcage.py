"""What the host offers every plugin (`rollcage:plugin/host`), in Python terms.

* `config(schema)`: the plugin's `config` table from the operator's TOML,
  checked against `schema` (a typo is an error, not a silent default);
* `secret(name)`: a secret granted to the plugin (`secrets = [...]`);
* `log(level, message, **fields)`: a line in the host's log, under the
  plugin's id;
* `PluginError` and `returns_errors`: an error the run shows, instead of a
  crash.
"""

import functools
import json
import os
import sys
from typing import Any, Dict, List

from componentize_py_types import Err
from wit_world.imports import host


class PluginError(Exception):
    """An error the host shows as the call's result: a notifier's is
    retried, a check's counts as "no measurement", a provider's fails the
    step (and the engine rolls back)."""


class ConfigError(PluginError):
    """A config table or strategy parameters that do not fit their schema;
    `problems` lists every problem, each naming its key."""

    def __init__(self, what: str, problems: List[str]):
        super().__init__(f"invalid {what}: " + "; ".join(problems))
        self.problems = problems


class NoEnvironmentVariable(KeyError):
    """A read of `os.environ[NAME]` in a plugin, which sees no environment
    variables: the error says what to use instead."""

    def __str__(self) -> str:
        return (f"environment variable `{self.args[0]}`: plugins see no environment variables; "
                "read settings with rollcage.config(schema) and secrets with rollcage.secret(name)")


class _NoEnvironment(dict):
    """`os.environ` in a plugin: empty, and a missing key says why."""

    def __missing__(self, key):
        raise NoEnvironmentVariable(key)


if sys.platform == "wasi":
    # Only inside the component: tests under CPython keep their environment.
    os.environ = _NoEnvironment()


def returns_errors(method):
    """Decorate every exported method with this: an exception becomes the
    `err` the host shows. Uncaught, it would trap: the host reports a crash
    and never retries it."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Err as e:
            # Only text is a plugin's error; any other `Err` (a stream or
            # HTTP error code from a wasi call) would crash the call.
            if isinstance(e.value, str):
                raise
            raise Err(f"{type(e.value).__name__}: {getattr(e.value, 'value', '')}".rstrip(": ")) from None
        except PluginError as e:
            raise Err(str(e)) from None
        except Exception as e:
            raise Err(f"{type(e).__name__}: {e}") from None

    return call


def parse_config(text: str, schema: Dict[str, Any], what: str = "plugin config") -> Dict[str, Any]:
    """Parse a JSON table against `schema`: each key maps to its default
    value, or to a type (`str`, `int`, `float`, `bool`, `list`, `dict`) for
    a required key. Unknown keys, missing required keys and values of
    another type than their default's are errors, all reported at once."""
    try:
        raw = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise ConfigError(what, [f"not JSON: {e}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(what, ["expected a table"])
    problems = [
        f"unknown key `{key}`; expected {', '.join(schema) or 'none'}" for key in raw if key not in schema
    ]
    values = {}
    for key, spec in schema.items():
        wanted = spec if isinstance(spec, type) else type(spec)
        if key not in raw:
            if isinstance(spec, type):
                problems.append(f"`{key}` is required")
            else:
                values[key] = spec
            continue
        value = raw[key]
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            problems.append(f"`{key}` must be {_TYPE_NAMES.get(wanted, wanted.__name__)}, not {json.dumps(value)}")
        values[key] = value
    if problems:
        raise ConfigError(what, problems)
    return values


_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


def config(schema: Dict[str, Any]) -> Dict[str, Any]:
    """The plugin's `config` table (`{}` when the operator gave none),
    checked against `schema` (see `parse_config`). In it, `${secret:NAME}`
    references are already filled in for the secrets the plugin is granted."""
    return parse_config(host.config(), schema)


def secret(name: str) -> str:
    """The value of a secret granted to the plugin. A name that is not
    granted is an error naming the plugin and the secret, and the host
    records it as a denied capability."""
    try:
        return host.secret(name)
    except Err as e:
        raise PluginError(str(e.value)) from None


def log(level: str, message: str, **fields: Any) -> None:
    """A line in the host's log under the plugin's id: `level` is trace,
    debug, info, warn or error; `fields` become key/value pairs."""
    host.log(getattr(host.Level, level.upper()), message, [(k, str(v)) for k, v in fields.items()])
