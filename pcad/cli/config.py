"""Configuration files for every subcommand: ``--config FILE``, ``--print-config``,
``--help-options``, and the ``--help`` formatter that shows defaults.

:func:`install` adds to every subcommand parser (``pcad train``, ``pcad viz report``...):

- ``--config FILE`` (YAML ``.yaml``/``.yml`` or TOML ``.toml``): a mapping whose keys are the
  subcommand's argument names (``image_size`` or ``image-size``: the long flag without its
  dashes, or a positional's name such as ``input``); its values fill in every argument the
  command line does not give, so the command line beats the file. A key the subcommand does not
  take is a one-line error naming the key and the command. List flags take a list; flags
  given several times (``-o KEY=VALUE``) take a list, or for ``option`` a mapping
  ``{KEY: VALUE}``, whose items come before those of the command line.
- ``--print-config`` writes the full effective configuration (every argument with its value or
  default; ``pcad train`` adds the detector's options with their defaults) to stdout as YAML, or
  as TOML with ``--config-format toml``, and exits 0 without running the command, so that
  ``pcad train ... --print-config > c.yaml`` then ``pcad train --config c.yaml`` round-trips.
- ``--help-options`` (subcommands with ``--detector`` and ``--option``): the detector's options
  with their defaults and meanings (:meth:`pcad.detectors.base.Detector.options`).

A subcommand may set ``parser.set_defaults(_effective_config=FUNC)``: ``FUNC(dict) -> dict``
completes what ``--print-config`` writes (``pcad train``: the detector's options).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="pcad")
    >>> sub = parser.add_subparsers(dest="command")
    >>> p = sub.add_parser("demo")
    >>> _ = p.add_argument("--size", type=int, default=8)
    >>> install(parser)
    >>> print(dump_config({"size": 8, "name": "x", "tags": [1, 2]}, "toml"), end="")
    size = 8
    name = "x"
    tags = [1, 2]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcad.errors import InvalidInputError

#: argument names that are never configuration keys
NOT_KEYS = frozenset({"help", "version", "config", "print_config", "config_format",
                      "help_options", "func", "debug", "command"})
FORMATS = ("yaml", "toml")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` with each argument's default, ``(default: X)``, unless the default is None,
    False, empty, or its help already says ``default``.

    Example:
        >>> p = argparse.ArgumentParser(prog="x", formatter_class=DefaultsHelpFormatter)
        >>> _ = p.add_argument("--size", type=int, nargs=2, default=(8, 9), help="side")
        >>> _ = p.add_argument("--name", help="a name")
        >>> text = p.format_help()
        >>> "side (default: 8 9)" in text, "(default: None)" in text
        (True, False)
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default == argparse.SUPPRESS
                or (isinstance(default, (list, tuple, str)) and not default)
                or "default" in text.lower() or "%(default)" in text):
            return action.help
        if not action.option_strings and action.nargs not in ("?", "*"):
            return action.help
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(v) for v in default)
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def leaf_parsers(parser: argparse.ArgumentParser, prefix: str = ""
                 ) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand parser without subcommands of its own, by its command
    (``"train"``, ``"viz report"``)."""
    sub = _subparsers(parser)
    if sub is None:
        return {prefix: parser} if prefix else {}
    out: dict[str, argparse.ArgumentParser] = {}
    for name, child in sub.choices.items():
        out.update(leaf_parsers(child, f"{prefix} {name}".strip()))
    return out


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    sub = _subparsers(parser)
    children = [] if sub is None else list(dict.fromkeys(sub.choices.values()))
    return [parser] + [q for child in children for q in _all_parsers(child)]


def install(parser: argparse.ArgumentParser) -> None:
    """Give every parser the defaults-showing formatter and every subcommand parser
    ``--config``, ``--print-config`` and ``--config-format`` (plus ``--help-options`` where it
    has ``--detector`` and ``--option``)."""
    for p in _all_parsers(parser):
        p.formatter_class = DefaultsHelpFormatter
    for command, leaf in leaf_parsers(parser).items():
        dests = {a.dest for a in leaf._actions}
        group = leaf.add_argument_group("configuration")
        group.add_argument("--config", metavar="FILE",
                           help="YAML or TOML file of this command's arguments (keys: the "
                                "argument names); the command line overrides it")
        group.add_argument("--print-config", action="store_true",
                           help=f"print the full effective configuration of pcad {command} "
                                "(defaults included) and exit")
        group.add_argument("--config-format", choices=FORMATS, default="yaml",
                           help="format of --print-config")
        if {"detector", "option"} <= dests:
            group.add_argument("--help-options", action="store_true",
                               help="list the --detector's options (-o KEY=VALUE) with their "
                                    "defaults and meanings, and exit")


def _find_leaf(parser: argparse.ArgumentParser, argv: Sequence[str]
               ) -> tuple[str, argparse.ArgumentParser, list[str]] | None:
    """``(command, leaf parser, the tokens after the command)`` or None."""
    names: list[str] = []
    current = parser
    i = 0
    while (sub := _subparsers(current)) is not None:
        while i < len(argv) and argv[i].startswith("-"):
            i += 1
        if i >= len(argv) or argv[i] not in sub.choices:
            return None
        names.append(argv[i])
        current = sub.choices[argv[i]]
        i += 1
    return " ".join(names), current, list(argv[i:])


def _flag_value(tokens: Sequence[str], flag: str) -> str | None:
    """The value of the last ``flag VALUE`` or ``flag=VALUE`` in ``tokens`` (or None)."""
    value = None
    for k, tok in enumerate(tokens):
        if tok == "--":
            break
        if tok == flag and k + 1 < len(tokens):
            value = tokens[k + 1]
        elif tok.startswith(flag + "="):
            value = tok[len(flag) + 1:]
    return value


def load_config(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML (``.yaml``, ``.yml``) or TOML (``.toml``) file ``path``, keys
    with ``-`` read as ``_``.

    Raises:
        InvalidInputError: the file is missing, of another format, unreadable, or not a
            mapping (one line naming the file).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> f = Path(tempfile.mkdtemp()) / "c.toml"
        >>> _ = f.write_text('image-size = 64\\n[option]\\nepochs = 2\\n')
        >>> load_config(f)
        {'image_size': 64, 'option': {'epochs': 2}}
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise InvalidInputError(f"{path}: --config takes a .yaml, .yml or .toml file")
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such configuration file")
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is a bad file
        msg = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise InvalidInputError(f"{path}: unreadable configuration ({msg})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: a configuration file holds a mapping of argument "
                                f"names to values, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _convert_one(action: argparse.Action, value: Any, where: str) -> Any:
    if value is None:
        return None
    kind = action.type
    if isinstance(value, (dict, list)):
        raise InvalidInputError(f"{where}: expected one value, got {value!r:.60}")
    try:
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif callable(kind) and isinstance(value, str):
            value = kind(value)
        elif kind is None and not isinstance(value, str):
            if isinstance(value, bool):
                raise ValueError
            value = str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        name = getattr(kind, "__name__", "string") if kind else "string"
        raise InvalidInputError(f"{where}: expected {name}, got {value!r:.60}") from None
    if action.choices is not None and value not in action.choices:
        raise InvalidInputError(f"{where}: expected one of {list(action.choices)}, got "
                                f"{value!r:.60}")
    return value


def convert_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A configuration value checked and converted as ``action`` would read it from the
    command line (``where`` names it in errors)."""
    if action.nargs == 0:  # store_true / store_false / store_const
        if isinstance(action.const, bool):
            if not isinstance(value, bool):
                raise InvalidInputError(f"{where}: expected true or false, got {value!r:.60}")
            return value
        return value
    if isinstance(action, argparse._AppendAction):
        if value is None:
            return None
        if isinstance(value, dict):  # {KEY: VALUE} of a KEY=VALUE flag
            return [f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                    for k, v in value.items()]
        items = value if isinstance(value, list) else [value]
        return [_convert_one(action, v, where) for v in items]
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise InvalidInputError(f"{where}: expected {action.nargs} values, got {value!r:.60}")
        if action.nargs == "+" and not items:  # as if not given (a --print-config of an
            return None                          # incomplete command writes [])
        return [_convert_one(action, v, where) for v in items]
    return _convert_one(action, value, where)


def _keys(leaf: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in leaf._actions
            if a.dest not in NOT_KEYS and not a.dest.startswith("_")
            and a.dest != argparse.SUPPRESS}


def apply_config(command: str, leaf: argparse.ArgumentParser, values: dict[str, Any],
                 source: str) -> None:
    """Make ``values`` the defaults of ``leaf``'s arguments: a required argument or a
    positional it gives is no longer required on the command line.

    Raises:
        InvalidInputError: a key ``leaf`` does not take, or a value of the wrong kind.
    """
    actions = _keys(leaf)
    for key, value in values.items():
        if key not in actions:
            raise InvalidInputError(f"{source}: unknown key {key!r} for pcad {command} "
                                    f"(known: {', '.join(actions)})")
        action = actions[key]
        converted = convert_value(action, value, f"{source}: {key}")
        action.default = converted
        if converted is None:
            continue
        action.required = False
        if not action.option_strings:
            if action.nargs is None:
                action.nargs = "?"
            elif action.nargs == "+":
                action.nargs = "*"


def _relax(leaf: argparse.ArgumentParser) -> None:
    for action in _keys(leaf).values():
        action.required = False
        if not action.option_strings and action.nargs in (None, "+"):
            action.nargs = "?" if action.nargs is None else "*"


def print_detector_options(name: str, file: Any = None) -> None:
    """The table of ``pcad train --detector NAME --help-options``."""
    from pcad.detectors import detector_info

    cls = detector_info(name).obj
    rows = [(k, json.dumps(v), h) for k, v, h in cls.options()]
    wk = max(len(r[0]) for r in rows) if rows else 0
    wv = min(max((len(r[1]) for r in rows), default=0), 16)
    out = sys.stdout if file is None else file
    print(f"options of detector {name!r} (pcad train -o KEY=VALUE; values read as JSON):",
          file=out)
    for key, value, meaning in rows:
        print(f"  {key:<{wk}}  {value:<{wv}}  {meaning}".rstrip(), file=out)


def prepare(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int | None:
    """Read ``--config`` into the subcommand's defaults before parsing, relax required
    arguments for ``--print-config``, and answer ``--help-options`` (returns 0: exit now);
    None: go on parsing ``argv``."""
    found = _find_leaf(parser, argv)
    if found is None:
        return None
    command, leaf, tokens = found
    if "-h" in tokens or "--help" in tokens:
        return None
    path = _flag_value(tokens, "--config")
    values = load_config(path) if path is not None else {}
    if path is not None:
        apply_config(command, leaf, values, path)
    if "--help-options" in tokens and "detector" in _keys(leaf):
        name = _flag_value(tokens, "--detector") or _keys(leaf)["detector"].default
        if name is None:
            raise InvalidInputError(f"pcad {command} --help-options: give --detector NAME")
        print_detector_options(name)
        return 0
    if "--print-config" in tokens:
        _relax(leaf)
    return None


def effective_config(args: argparse.Namespace, parser: argparse.ArgumentParser
                     ) -> dict[str, Any]:
    """The parsed arguments of the subcommand as a configuration mapping (argument order)."""
    found = _find_leaf(parser, [v for v in _command_path(args)])
    leaf = found[1] if found else parser
    cfg: dict[str, Any] = {}
    for key in _keys(leaf):
        value = getattr(args, key, None)
        cfg[key] = list(value) if isinstance(value, tuple) else value
    hook = getattr(args, "_effective_config", None)
    return hook(cfg) if callable(hook) else cfg


def _command_path(args: argparse.Namespace) -> list[str]:
    names = [getattr(args, "command", None)]
    names += [v for k, v in vars(args).items() if k.endswith("_command") and k != "command"]
    return [n for n in names if isinstance(n, str)]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise InvalidInputError(f"--print-config: cannot write {value!r:.60} as TOML")


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def dump_config(cfg: dict[str, Any], fmt: str = "yaml") -> str:
    """``cfg`` as YAML or TOML text (TOML has no null: None values are left out, which
    reads back as the default)."""
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in cfg.items()
             if v is not None and not isinstance(v, dict)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += ["", f"[{_toml_key(k)}]"]
            lines += [f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items()
                      if vv is not None]
    return "\n".join(lines) + "\n"
