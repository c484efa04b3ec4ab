"""The two mechanisms every entry point shares: a config dataclass -> command line, and atomic
file writes. Standard library only; imports no project file, so any file may import it.

A config is a flat dataclass whose fields are declared with `option(default, doc)`; the doc is the
field's `--help` text. `parse_config(Config, argv)` gives every field a dash-style flag
(`batch_size` -> `--batch-size`), a bool field a switch, and a field declared
`positional=True` a required positional argument. `given_flags` returns only the flags actually
typed, for callers that layer values (defaults, then a stored run's config, then a preset, then
the typed flags).

`atomic_write(path, write)` calls `write(tmp)` on a temporary file beside `path`, then renames it
over `path`: a reader (or a kill -9) sees the old file or the whole new one, never half; the
temporary file is removed if writing fails (disk full, read-only folder).
"""
import argparse
import dataclasses
import json
import os
from pathlib import Path


def option(default, doc, *, type=None, positional=False, choices=None, nargs=None):
    """A config field with its --help text. `type` converts the typed text (needed when the
    default is None); `choices` restricts it; nargs="+" takes one or more values (a list)."""
    return dataclasses.field(default=default, metadata=dict(
        help=doc, type=type, positional=positional, choices=choices, nargs=nargs))


def flag_name(name):
    return f"--{name.replace('_', '-')}"


def build_parser(config_cls, description):
    """An ArgumentParser with one argument per field; unset flags are absent from the result."""
    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(config_cls):
        meta, default = f.metadata, f.default
        if default is dataclasses.MISSING:
            default = None
        shown = "" if default in (None, False, ()) else f" (default: {default})"
        if meta.get("positional"):  # required, unless nargs says "*"
            parser.add_argument(f.name, help=meta["help"], type=meta.get("type") or str,
                                **({"nargs": meta["nargs"]} if meta.get("nargs") else {}))
        elif isinstance(default, bool):
            parser.add_argument(flag_name(f.name), dest=f.name, action="store_true",
                                default=argparse.SUPPRESS, help=meta["help"])
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, default=argparse.SUPPRESS,
                                type=meta.get("type") or type(default), choices=meta.get("choices"),
                                nargs=meta.get("nargs"), help=meta["help"] + shown)
    return parser


def given_flags(config_cls, argv=None, description=None):
    """Only the values typed on the command line, as a dict of field name -> value."""
    return vars(build_parser(config_cls, description).parse_args(argv))


def parse_config(config_cls, argv=None, description=None):
    """Command line -> config_cls instance (defaults for what was not typed)."""
    return config_cls(**given_flags(config_cls, argv, description))


def atomic_write(path, write):
    """write(tmp_path), then rename tmp_path over path; the temporary file never outlives a
    failure. Returns path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path, obj):
    """obj as indented JSON, atomically; NaN / inf are refused (they are not valid JSON)."""
    text = json.dumps(obj, indent=2, allow_nan=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))
