"""Configuration: validate against the JSON schema, fill defaults, name bad keys.

The schema (fmrivid/schema/config.schema.yaml, inside the package) documents every key; the ``decode.<name>``
sections of the neural decoders and the ``decode.neural`` choices come from their registry
(fmrivid/decoders/registry.py). ``describe`` turns the whole into the reference in config/README.md.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from fmrivid.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "config.schema.yaml"


def load_schema(path=None):
    """Load the config schema (YAML), with the neural decoders' sections from their registry."""
    from fmrivid.decoders import registry
    from fmrivid.generate import methods

    with open(path or SCHEMA_PATH) as fh:
        schema = yaml.safe_load(fh)
    decode = schema["properties"]["decode"]["properties"]
    decode["neural"]["items"]["enum"] = list(registry.DECODERS)
    decode["neural"]["description"] = registry.neural_description()
    decode.update(registry.schema_sections())
    method = schema["properties"]["generate"]["properties"]["method"]
    method["enum"] = list(methods.METHODS)
    method["description"] = methods.schema_description()
    return schema


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
        elif sub.get("type") == "object" and isinstance(sub.get("additionalProperties"), dict):
            yield full, "object", default, sub.get("description", "")  # a map: name -> entry
            yield from describe(sub["additionalProperties"], prefix=full + ".<name>.")
        else:
            yield full, typ, default, sub.get("description", "")


def markdown_table(schema=None):
    """The config reference as a Markdown table (the body of config/README.md)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    def cell(text):
        return " ".join(str(text).split()).replace("|", "\\|")  # a pipe would end the cell, even in a code span

    for key, typ, default, desc in describe(schema):
        shown = "" if default == "" else f"`{cell(default)}`"
        lines.append(f"| `{key}` | {cell(typ)} | {shown} | {cell(desc)} |")
    return "\n".join(lines) + "\n"


REFERENCE_PATH = Path(__file__).resolve().parent.parent / "config" / "README.md"
REFERENCE_COMMAND = "python -m fmrivid.config --write"


def reference_markdown(schema=None):
    """The whole of config/README.md: a header saying how it is made, then ``markdown_table``."""
    header = (
        "# Configuration reference\n\n"
        "<!-- GENERATED FILE: do not edit by hand. -->\n"
        "Generated from the config schema (the JSON schema read by `fmrivid.config.load_schema()`: every key's\n"
        "`description`; the neural decoders' `decode.<name>` sections come from `fmrivid/decoders/registry.py`).\n"
        "After changing either, regenerate this file with\n\n"
        f"    {REFERENCE_COMMAND}        # or: python -m fmrivid.config > config/README.md\n\n"
        "`tests/unit/test_docs.py` fails when this file and the schema disagree. Defaults are the real-data\n"
        "settings; a run layers each `--configfile` over them in order (see the main README, *Concepts*).\n\n"
    )
    return header + markdown_table(schema)


if __name__ == "__main__":  # python -m fmrivid.config [--write]  -> print (or write) config/README.md
    import sys

    if sys.argv[1:] == ["--write"]:
        REFERENCE_PATH.write_text(reference_markdown())
        print(f"wrote {REFERENCE_PATH}")
    elif sys.argv[1:]:
        sys.exit("usage: python -m fmrivid.config [--write]   (print, or write config/README.md)")
    else:
        print(reference_markdown(), end="")
