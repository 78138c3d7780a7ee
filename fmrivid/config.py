"""Configuration: validate against the JSON schema, fill defaults, name bad keys.

The schema (config/schema/config.schema.yaml) documents every key; ``describe``
turns it into the reference table in README.md.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from fmrivid.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema" / "config.schema.yaml"


def load_schema(path=None):
    """Load the config schema (YAML)."""
    with open(path or SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _fill_defaults(schema, value):
    """Recursively insert schema defaults into ``value`` (a dict), in place."""
    if schema.get("type") != "object" or not isinstance(value, dict):
        return value
    for key, sub in schema.get("properties", {}).items():
        if key not in value:
            if "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object":
                value[key] = {}
        if key in value:
            _fill_defaults(sub, value[key])
    return value


def _where(error):
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


def validate(config, schema=None, source="config"):
    """Return a validated copy of ``config`` with every default filled in.

    Raises
    ------
    ConfigError
        Naming the offending key, what was expected and what was found, for
        unknown keys, wrong types and out-of-range values.
    """
    schema = schema or load_schema()
    cfg = _fill_defaults(schema, copy.deepcopy(dict(config)))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = _where(err)
            if err.validator == "additionalProperties":
                allowed = sorted(err.schema.get("properties", {}))
                extra = sorted(set(err.instance) - set(allowed))
                for key in extra:
                    full = key if where == "<top level>" else f"{where}.{key}"
                    lines.append(f"unknown config key '{full}' (expected one of: {', '.join(allowed)})")
            else:
                lines.append(f"config key '{where}': expected {_expected(err)}; found {err.instance!r}")
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(lines))
    return cfg


def _expected(err):
    if err.validator == "enum":
        return "one of " + ", ".join(repr(v) for v in err.validator_value)
    if err.validator == "type":
        return f"type {err.validator_value}"
    if err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{err.validator} {err.validator_value}"
    if err.validator == "required":
        return f"keys {err.validator_value}"
    return f"{err.validator} {err.validator_value!r}"


def load(path):
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    return validate(raw, source=str(path))


def describe(schema=None, prefix=""):
    """Yield (key, type, default, description) rows for every documented key."""
    schema = schema or load_schema()
    for key, sub in schema.get("properties", {}).items():
        full = f"{prefix}{key}"
        typ = sub.get("type", "")
        if isinstance(typ, list):
            typ = "|".join(typ)
        default = sub.get("default", "")
        if sub.get("type") == "object" and "properties" in sub:
            yield full, "object", "", sub.get("description", "")
            yield from describe(sub, prefix=full + ".")
        else:
            yield full, typ, default, sub.get("description", "")


def markdown_table(schema=None):
    """The config reference as a Markdown table (README.md embeds it; a test keeps them equal)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, default, desc in describe(schema):
        shown = "" if default == "" else f"`{default}`"
        lines.append(f"| `{key}` | {typ} | {shown} | {' '.join(str(desc).split())} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m fmrivid.config  -> print the reference table
    print(markdown_table(), end="")
