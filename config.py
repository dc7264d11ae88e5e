"""Configs: the parser's defaults < a YAML file (--config) < command-line flags, one set of names
everywhere (a YAML key is its flag with underscores); the argparse types that check each value where
it is read, flag or YAML alike; and configs written back as plain data (config.yaml, checkpoints).
"""
import argparse
import difflib
import math
import os
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from utils import UserError


def ranged(kind, low=None, high=None, *, low_open: bool = False, high_open: bool = False):
    """An argparse type: a number of `kind` (int or float) within bounds. Checked where the text is
    parsed, so a flag and a YAML value out of range both give one clear error instead of a traceback
    deep in the optimizer or the loader."""
    limits = [f"{'>' if low_open else '>='} {low}" if low is not None else "",
              f"{'<' if high_open else '<='} {high}" if high is not None else ""]

    def parse(text):
        value = kind(text)  # ValueError: argparse says "invalid int value: 'x'"
        if not math.isfinite(value) or \
                (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and (value >= high if high_open else value > high)):
            raise argparse.ArgumentTypeError(f"must be {' and '.join(filter(None, limits))}, not {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on"), ("false", "no", "off")  # a switch's value in words, any case


def yes_no(text) -> bool:
    """A switch given a value, as the tutorial gives one (`--freeze-layers False`, where its type=bool
    read any word, "False" too, as True): true/false, yes/no, on/off, 1/0."""
    value = str(text).strip().lower()
    if value in (*TRUE_WORDS, "1"):
        return True
    if value in (*FALSE_WORDS, "0"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, not {text}")


def folder_name(text: str) -> str:
    """--name: one folder inside --output, where a path would put the run beside others, or outside --output;
    empty for the default name."""
    if text == "":
        return None
    if text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"must be a folder name, not {text!r}: --output says where runs go")
    return text


def folder_path(text: str) -> Path:
    """A folder to read or write (--data-path, --out): an empty one, as an unset shell variable gives it ("$DATA"),
    is refused, where Path("") would quietly mean the folder the command runs in."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?): name the folder")
    return Path(text)


def weights_path(text: str):
    """--weights: a file, or 'none' for training from scratch (the tutorial's empty string too, and a config's
    `weights: false`, or no, or off)."""
    return "none" if text.strip().lower() in ("", "none", *FALSE_WORDS) else Path(text)


def sha256_digest(text: str) -> str:
    """--sha256: 64 hexadecimal digits, checked before a download of hundreds of MB that it could not match."""
    digest = text.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError(f"must be a SHA-256 digest, 64 hexadecimal digits, not {text!r} "
                                         "(sha256sum FILE prints one)")
    return digest


def web_address(text: str) -> str:
    """--url: an http:// or https:// address, checked before anything is fetched or said; not empty, as an unset
    shell variable gives it ("$URL"), which would quietly mean the default one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?): give an http:// or https:// address")
    try:
        scheme = urlsplit(text.strip()).scheme.lower()
    except ValueError as error:  # "http://[::1": urllib's
        raise argparse.ArgumentTypeError(f"{text} is not a valid address: {error}") from None
    if scheme not in ("http", "https"):  # a local path, a mistyped scheme (htp://), file://
        raise argparse.ArgumentTypeError(f"{text} is no http:// or https:// address (to use a flower_photos.tgz you "
                                         "have, put it beside --data-path under that name and leave --url out)")
    return text.strip()


POSITIVE_INT = ranged(int, 1)
COUNT = ranged(int, 0)  # 0 meaning none or off
POSITIVE = ranged(float, 0, low_open=True)
NON_NEGATIVE = ranged(float, 0)
FRACTION = ranged(float, 0, 1, high_open=True)


def config_keys(parser: argparse.ArgumentParser) -> dict:
    """The config keys a parser knows (its argument names, with underscores) and their actions: a key's first
    (--freeze-layers BOOL, not the --no-freeze-layers beside it)."""
    return {a.dest: a for a in reversed(parser._actions) if a.dest not in ("help", "config")}


def read_yaml_config(path, parser: argparse.ArgumentParser) -> dict:
    """Read a YAML config of overrides; every key must be one of the parser's, every value valid."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--config {path} is a folder: give a YAML file, such as configs/cpu_demo.yaml")
    if not path.is_file():
        # configs/cpu_demo.yaml typed from another folder than the project's: the project's own file named
        own = Path(__file__).resolve().parent / path
        there = f"; the project's is {own}" if not path.is_absolute() and own.is_file() else ""
        raise UserError(f"config file not found: {path} (looked for from {Path.cwd()}){there}")
    try:
        # bytes: YAML reads UTF-8, and UTF-16 by its byte-order mark (Windows Notepad's "Unicode"); not text, an error
        values, texts = load_yaml(path.read_bytes())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None  # one line
    if not isinstance(values, dict):
        raise UserError(f"{path} must hold a mapping of config keys to values")
    actions = config_keys(parser)
    values.pop("config", None)  # a run's own config.yaml records the --config it was given: fed back, it is this file
    for key, value in list(values.items()):
        if key not in actions:
            words = str(key).replace("-", "_").lower()  # EPOCHS: epochs
            # a key it begins with (lr_rate: lr), or its initials (learning_rate: lr); else the nearest spelling
            near = [known for known in actions if words.startswith(known + "_")
                    or "_" in words and "".join(word[:1] for word in words.split("_")) == known] or \
                difflib.get_close_matches(words, list(actions), n=1, cutoff=0.5)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UserError(f"unknown config key {key!r} in {path}{hint}; valid keys: {', '.join(sorted(actions))}")
        action = actions[key]
        if value is None and action.default is not None:  # `epochs:` left empty: no value, where one is needed
            raise UserError(f"{path}: {key}: has no value: give one, or remove the line for its default "
                            f"({plain(action.default)})")
        # a switch: --ema, --no-ema; or None where that is its default (--compile's: decided by the run); quoted
        # ('true', "no") as yes_no reads it, not "'true' is not true or false"
        if action.nargs == 0 and isinstance(value, str) and value.strip().lower() in (*TRUE_WORDS, *FALSE_WORDS):
            value = yes_no(value)
        if action.nargs == 0 and not isinstance(value, bool) and value is not None:
            raise UserError(f"{path}: {key}: {value!r} is not true or false")
        if isinstance(value, bool) and action.choices is not None:  # YAML 1.1 reads amp: off as False
            value = {False: "off", True: "on"}[value]
        if isinstance(value, (list, dict)):  # no flag takes several values
            raise UserError(f"{path}: {key}: {value!r} is not a single value")
        if is_text(action) and value is not None and not isinstance(value, str) and key in texts:
            value = texts[key]  # a name or a path as typed: name: 1.10 is "1.10", not 1.1; output: 0755 not 493
        # Every value is converted as the flag's text would be: YAML reads 1e-4 as a string (YAML 1.1
        # wants a dot), and 2.5 given for a count must fail here, not as a TypeError in range().
        if isinstance(value, float) and value.is_integer() and getattr(action.type, "__name__", "") == "int":
            value = int(value)  # epochs: 2.0, as a script that writes configs may give it: a whole number
        if value is not None and action.type is not None:
            try:
                value = action.type(str(value))
            except argparse.ArgumentTypeError as err:
                raise UserError(f"{path}: {key}: {err}") from None
            except (TypeError, ValueError):  # argparse's words for the flag: "invalid int value: '2.5'"
                kind = getattr(action.type, "__name__", "")
                wanted = {"int": "a whole number", "float": "a number"}.get(kind, "a valid value")
                raise UserError(f"{path}: {key}: {value!r} is not {wanted}") from None
            if isinstance(value, Path):  # no shell has expanded a ~ in a file
                value = value.expanduser()
        if action.choices is not None and value not in action.choices and value is not None:
            raise UserError(f"{path}: {key}: {texts.get(key, value)!r} is not one of {list(action.choices)}")
        values[key] = value
    return values


def load_yaml(data: bytes) -> tuple:
    """(the YAML's values, or {} for an empty file; the text of each top-level plain scalar, by key)."""
    loader = yaml.SafeLoader(data)
    try:
        node = loader.get_single_node()
        values = loader.construct_document(node) if node is not None else {}
    finally:
        loader.dispose()
    texts, lines = {}, {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            line = key.start_mark.line + 1
            if key.value in lines:  # PyYAML keeps the last without a word, where YAML's spec says keys are unique
                raise yaml.YAMLError(f"{key.value} is given twice, on lines {lines[key.value]} and {line}: keep one")
            lines[key.value] = line
            if isinstance(value, yaml.ScalarNode) and value.style is None:
                texts[key.value] = value.value
    return values or {}, texts


def is_text(action) -> bool:
    """Whether a key's value is a name or a path (model, name, device, data_path, weights), not a number or a
    switch: the text YAML 1.1 would read as a number, a date or a boolean is kept as typed."""
    return action.nargs != 0 and action.choices is None and \
        getattr(action.type, "__name__", "") not in ("int", "float", "yes_no")


def parse_config(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse flags over the YAML file named by --config over the parser's defaults."""
    if named := config_named(argv):
        parser.set_defaults(**read_yaml_config(named, parser))
    return parser.parse_args(argv)


def config_named(argv) -> str | None:
    """The file --config names on the command line, if any; one only (the first was passed over in silence)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", action="append")
    named = pre.parse_known_args(argv)[0].config or [None]
    if len(named) > 1:
        raise UserError(f"--config is given {len(named)} times ({', '.join(named)}): give one file, and flags for "
                        "what should differ from it")
    return named[0]


def explicit_flags(parser: argparse.ArgumentParser, argv, typed: set = None) -> set:
    """The config keys typed on the command line (`typed`, where the caller has them already), and those of a
    --config file named there (for a resumed run, they win over its saved config)."""
    typed = typed_flags(parser, argv) if typed is None else set(typed)
    if named := config_named(argv):
        typed |= set(read_yaml_config(named, parser))
    return typed


def typed_flags(parser: argparse.ArgumentParser, argv) -> set:
    """The config keys typed on the command line itself."""
    unset = object()
    saved = [(action, action.default) for action in parser._actions]  # per action: two may share a key
    try:
        for action in parser._actions:
            action.default = unset
        given = vars(parser.parse_args(argv))
    finally:
        for action, default in saved:
            action.default = default
    return {key for key, value in given.items() if value is not unset}


def plain(value):
    """A config value as plain data (YAML, checkpoints): paths become strings, tuples lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def write_yaml(path, data: dict) -> None:
    Path(path).write_text(yaml.safe_dump(plain(data), sort_keys=False), encoding="utf-8")
