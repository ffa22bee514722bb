"""YAML configuration: one ``Config`` per run, built from a file plus type-checked overrides.

A config file holds up to three YAML documents: the values, one help line per key, and the
allowed values of some keys. A file may start its values with ``__BASE__: <file>`` (or a list
of files, later ones winning; paths relative to the file): it then inherits the base's values,
help lines and allowed values and states only what differs, key by key (a mapping value replaces
the base's whole), each value type-checked against the base's like a command-line override. The
shipped files do that (``config/base/ssd_defaults.yaml`` holds the help and allowed values once); a
full, self-contained file in the model zoo's format loads as it always did.

``load_config`` (library code, tests) and ``parse_args`` (entry scripts) both go through the same
validation, so a typo in a key or a value of the wrong type fails at start-up with one message
instead of hours into a run. Every value, wherever it comes from (a full file, a ``__BASE__`` child,
the command line, ``overrides``), gets the same check: a known key (``config/base/ssd_defaults.yaml``
holds them; a full file may declare more by giving them a help line), the type of that file's value
(an integer key refuses 4.5 instead of truncating it later), booleans only as true/false, and the
key's range in ``VALUE_RANGES``. Nothing happens at import time:
the module holds no config object and never looks at ``sys.argv`` unless ``parse_args`` is called.
"""
from __future__ import annotations

import ast
import copy
import difflib
import functools
import logging
import os
import pprint
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import yaml

from src.model_utils.errors import UsageError
from src.model_utils.files import temporary_path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "ssd300_config.yaml"
#: Every key the code knows, with the type its values must have: full files are checked against it.
REFERENCE_CONFIG_PATH = REPO_ROOT / "config" / "base" / "ssd_defaults.yaml"
_CHOICES_DOC_TITLE = "allowed values"
BASE_KEY = "__BASE__"
logger = logging.getLogger("ssd")

#: Model-zoo keys this code does not read, with what takes their place. A full zoo file that has one
#: still loads (the key is dropped with a warning); anywhere else the key is an error saying this.
RETIRED_ZOO_KEYS = {
    "global_step": "only the zoo's ONNX config has it; the learning-rate schedule starts at pre_trained_epoch_size",
}
#: Keys added after run configs began to be saved beside checkpoints (and absent from every model-zoo
#: file): a self-contained file without them was written before they existed, so it takes their
#: defaults, with a log line, and old runs' config.yaml and copied zoo files keep working. Any other
#: missing key is still an error when read: its value would be a guess.
LATER_KEYS = ("finetune", "yolo_root", "yolo_train_split", "yolo_val_split", "val_fraction", "export_nms", "quantize",
              "calib_images")
#: Integer keys for which a fraction is meaningful: a file may say ``warmup_epochs: 0.3``.
FRACTIONAL_INT_KEYS = frozenset({"warmup_epochs", "loss_scale"})


class ConfigError(UsageError, ValueError):
    """A config file, override or command-line value that cannot be used; the message says the fix."""


class MissingKeyError(UsageError, AttributeError, KeyError):
    """A key the code asks for is not in the config (an AttributeError, so ``getattr(cfg, k, default)`` works)."""

    def __str__(self) -> str:
        # KeyError would print the message in quotes.
        return str(self.args[0])


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-5`` as a float and refuses duplicate keys.

    PyYAML follows YAML 1.1, where ``1e-5`` (no dot) is a string, and keeps the last of two equal
    keys silently; both hide mistakes in hand-written configs.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key_node.value}' (remove one of them)", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


# Booleans only as true/false: YAML 1.1's yes/no/on/off would silently turn a value (or a class named
# "no") into a bool, so they stay strings here and a boolean key then refuses them.
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class Config:
    """Attribute access to a run's settings (``config.img_shape``); nested mappings become Configs.

    The object remembers the file it came from so that asking for a key the file lacks names the
    file and the fix. Attributes can be assigned (entry scripts record e.g. the rank).
    """

    def __init__(self, values: Mapping[str, Any], help_text: Mapping[str, str] | None = None,
                 source: str = "<in-memory config>", choices: Mapping[str, list] | None = None) -> None:
        _check_key_names(values, source)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_help", dict(help_text or {}))
        object.__setattr__(self, "_choices", copy.deepcopy(dict(choices or {})))
        object.__setattr__(self, "_values", {key: self._wrap(key, value) for key, value in values.items()})

    def _wrap(self, key: str, value: Any) -> Any:
        if isinstance(value, Config):
            value = value.to_dict()
        if isinstance(value, Mapping):
            return Config(value, source=f"{self._source} (under '{key}')")
        return copy.deepcopy(value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; private names must fail plainly (pickle/copy probe them).
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise self._missing(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        _check_key_names({name: value}, self._source)
        self._values[name] = self._wrap(name, value)

    def _missing(self, name: str) -> MissingKeyError:
        return MissingKeyError(
            f"config key '{name}' is missing from {self._source}{_did_you_mean(name, self._values)}; add a line "
            f"'{name}: <value>' to that file ({_display_path(DEFAULT_CONFIG_PATH)} lists every key with its default "
            "and help)")

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._values))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when the file does not define it."""
        return self._values.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """A plain (deep-copied) dict of all keys, nested Configs included, in file order."""
        return {key: value.to_dict() if isinstance(value, Config) else copy.deepcopy(value)
                for key, value in self._values.items()}

    def help(self, key: str) -> str:
        """The help line of ``key`` from the file's second document ("" if the file gives none)."""
        if key not in self._values:
            raise self._missing(key)
        return self._help.get(key, "")

    def __repr__(self) -> str:
        lines = [f"Config from {self._source}:"]
        for key, value in self.to_dict().items():
            text = pprint.pformat(value, width=100, compact=True, sort_dicts=False)
            lines.append(f"  {key}: " + text.replace("\n", "\n    "))
        return "\n".join(lines)


_RESERVED_NAMES = frozenset(name for name in dir(Config) if not name.startswith("_"))


def _check_key_names(values: Mapping[Any, Any], source: str) -> None:
    """Keys must be usable as attributes and as ``--key`` flags, and must not hide Config's methods."""
    for key in values:
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise ConfigError(f"{source}: {key!r} cannot be a config key; use a name made of letters, digits "
                              "and '_' that does not start with '_' or a digit")
        if key in _RESERVED_NAMES:
            raise ConfigError(f"{source}: '{key}' cannot be a config key because it is a Config method; rename it")


@dataclass(frozen=True)
class _ConfigFile:
    """The three documents of one YAML config file, checked for shape but not yet overridden."""

    path: Path
    values: dict[str, Any]
    help: dict[str, str]
    choices: dict[str, list]


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _resolve_path(path: str | Path) -> Path:
    """The file itself, or for a relative path not found from the working directory, the repo's copy."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate
    if not candidate.is_absolute() and (REPO_ROOT / candidate).is_file():
        return REPO_ROOT / candidate
    raise ConfigError(f"config file {candidate} not found (also looked under {REPO_ROOT}); pass an existing YAML "
                      f"file, e.g. --config_path {_display_path(DEFAULT_CONFIG_PATH)}")


def _read_config_file(path: str | Path, including: tuple[Path, ...] = ()) -> _ConfigFile:
    """The file's three documents, merged over those of its ``__BASE__`` files when it names any."""
    resolved = _resolve_path(path).resolve()
    if resolved in including:
        chain = " -> ".join(_display_path(p) for p in (*including, resolved))
        raise ConfigError(f"{_display_path(including[-1])}: {BASE_KEY} makes a cycle ({chain}); remove one link")
    try:
        with open(resolved, encoding="utf-8") as stream:
            documents = list(yaml.load_all(stream, Loader=_YamlLoader))
    except yaml.YAMLError as err:
        raise ConfigError(f"{resolved} is not valid YAML: {' '.join(str(err).split())}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{resolved} is not a UTF-8 text file ({err.reason} at byte {err.start}); pass a YAML "
                          "config file, e.g. --config_path config/ssd300_config_cpu.yaml") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{resolved} is a folder; pass a YAML config file") from err
    if not 1 <= len(documents) <= 3:
        raise ConfigError(f"{resolved} has {len(documents)} YAML documents; expected 1 to 3 separated by '---' "
                          "(values, help lines, allowed values)")
    documents += [None] * (3 - len(documents))
    bases = _base_paths(documents[0], resolved)
    values = _mapping_document(documents[0], resolved, "values", allow_empty=bool(bases))
    help_doc = _mapping_document(documents[1], resolved, "help lines", allow_empty=True)
    choices = _mapping_document(documents[2], resolved, _CHOICES_DOC_TITLE, allow_empty=True)
    help_lines = {key: str(text) for key, text in help_doc.items()}
    if bases:
        base = _merged_bases([_read_config_file(b, (*including, resolved)) for b in bases])
        config_file = _inherit(base, resolved, values, help_lines, choices)
    else:
        config_file = _with_later_keys(_ConfigFile(resolved, _checked_full_file_values(values, help_lines, resolved),
                                                   help_lines, choices))
    _check_choices_document(config_file)
    return config_file


def _with_later_keys(config_file: _ConfigFile) -> _ConfigFile:
    """A self-contained file completed from the reference file: the LATER_KEYS it lacks (value, help, allowed
    values), and this code's allowed values for every key (an older run's file lists those of its day, e.g.
    file_format without OPENVINO)."""
    if config_file.path == REFERENCE_CONFIG_PATH.resolve():
        return config_file
    reference = _read_config_file(REFERENCE_CONFIG_PATH)
    missing = [key for key in LATER_KEYS if key not in config_file.values]
    if missing:
        logger.info(f"{_display_path(config_file.path)} predates the keys {', '.join(missing)}: using their defaults")
    keys = {*config_file.values, *missing}
    return _ConfigFile(config_file.path, {**config_file.values, **{key: reference.values[key] for key in missing}},
                       {**config_file.help, **{key: reference.help[key] for key in missing if key in reference.help}},
                       {**config_file.choices, **{key: allowed for key, allowed in reference.choices.items()
                                                  if key in keys}})


@functools.lru_cache(maxsize=1)
def _reference_values() -> dict[str, Any]:
    """The values document of ``REFERENCE_CONFIG_PATH``: every known key and the type of its values."""
    with open(REFERENCE_CONFIG_PATH, encoding="utf-8") as stream:
        return next(yaml.load_all(stream, Loader=_YamlLoader))


def _checked_full_file_values(values: dict, help_lines: dict, path: Path) -> dict:
    """A self-contained file's values, each checked like a child's against the reference file.

    A key is known when the reference file has it or the file gives it a help line (a deliberate
    new key); a model-zoo key this code does not read is dropped with a warning, so that a copied
    zoo file still loads. Anything else is a typo, named with a close known key when there is one.
    """
    reference = _reference_values()
    checked = {}
    for key, value in values.items():
        where = f"{_display_path(path)}: {key}"
        if key in RETIRED_ZOO_KEYS:
            logger.warning(f"{where}: ignored, a model-zoo key this code does not read "
                           f"({RETIRED_ZOO_KEYS[key]})")
        elif key in reference:
            checked[key] = _checked_value(key, value, reference[key], where)
        elif key in help_lines:
            checked[key] = value
        else:
            raise ConfigError(f"{where}: unknown key{_did_you_mean(key, reference)} (neither in "
                              f"{_display_path(REFERENCE_CONFIG_PATH)} nor a model-zoo key); fix the spelling, or "
                              "declare a new key with a help line in the file's second document")
    return checked


def _base_paths(values_document: Any, path: Path) -> list[Path]:
    """The ``__BASE__`` files named (and removed) from a values document, relative to its file."""
    if not isinstance(values_document, dict) or BASE_KEY not in values_document:
        return []
    named = values_document.pop(BASE_KEY)
    names = named if isinstance(named, list) else [named]
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ConfigError(f"{_display_path(path)}: {BASE_KEY} must be a file name or a list of file names, "
                          f"got {named!r}")
    for name in names:
        if not (path.parent / name).is_file():
            raise ConfigError(f"{_display_path(path)}: {BASE_KEY} file {name} not found (looked for "
                              f"{path.parent / name}); give a path relative to {_display_path(path.parent)}")
    return [path.parent / name for name in names]


def _merged_bases(bases: list[_ConfigFile]) -> _ConfigFile:
    """Several bases as one: later files win key by key; the first file's key order comes first."""
    merged = bases[0]
    for later in bases[1:]:
        merged = _ConfigFile(later.path, {**merged.values, **later.values}, {**merged.help, **later.help},
                             {**merged.choices, **later.choices})
    return merged


def _inherit(base: _ConfigFile, path: Path, values: dict, help_lines: dict, choices: dict) -> _ConfigFile:
    """The base's documents with the file's own entries on top; every key must be one the base knows."""
    for document, title in ((values, "values"), (help_lines, "help lines"), (choices, _CHOICES_DOC_TITLE)):
        for key in document:
            if key not in base.values:
                raise ConfigError(f"{_display_path(path)} ({title} document): {_unknown_key(key, base, flag=False)}")
    merged = dict(base.values)
    for key, value in values.items():
        merged[key] = _inherited_value(key, value, base.values[key], f"{_display_path(path)}: {key}")
    return _ConfigFile(path, merged, {**base.help, **help_lines}, {**base.choices, **choices})


def _inherited_value(key: str, value: Any, base_value: Any, where: str) -> Any:
    """A file's own value, checked against the type of the value it replaces and the key's range.

    The check is the one a command-line override gets, with one exception: a mapping replaces the
    base's mapping whole, so that a child can drop an entry; entries the base also has are checked
    against it.
    """
    if isinstance(value, dict) and isinstance(base_value, dict):
        return _replaced_mapping(value, base_value, where)
    return _checked_value(key, value, base_value, where)


def _replaced_mapping(value: dict, base_value: dict, where: str) -> dict:
    """``value`` in place of the base's whole mapping; entries the base also has keep the base's types."""
    replaced = {}
    for entry, item in value.items():
        if isinstance(item, dict) and isinstance(base_value.get(entry), dict):
            replaced[entry] = _replaced_mapping(item, base_value[entry], f"{where}.{entry}")
        elif entry in base_value:
            replaced[entry] = _coerce(item, base_value[entry], f"{where}.{entry}")
        else:
            replaced[entry] = copy.deepcopy(item)
    return replaced


def _mapping_document(document: Any, path: Path, title: str, allow_empty: bool) -> dict:
    if allow_empty and not document and isinstance(document, (dict, type(None))):
        return {}
    if not isinstance(document, dict) or not document:
        raise ConfigError(f"{path}: the {title} document must be a non-empty 'key: value' mapping, "
                          f"got {type(document).__name__}")
    _check_key_names(document, f"{path} ({title} document)")
    return document


def _check_choices_document(config_file: _ConfigFile) -> None:
    """Every choices entry must name a real key, be a non-empty list and admit the file's own value."""
    where = f"{config_file.path} ({_CHOICES_DOC_TITLE} document)"
    for key, allowed in config_file.choices.items():
        if key not in config_file.values:
            raise ConfigError(f"{where}: '{key}' is not a key of the values document; "
                              f"the closest key is '{_closest_key(key, config_file.values)}'")
        if not isinstance(allowed, list) or not allowed:
            raise ConfigError(f"{where}: '{key}' must map to a non-empty list of allowed values")
        _check_choice(key, config_file.values[key], config_file, str(config_file.path))


def _check_choice(key: str, value: Any, config_file: _ConfigFile, where: str) -> None:
    allowed = config_file.choices.get(key)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{where}: {value!r} is not an allowed value of {key}; choose one of {allowed}")


def _closest_key(key: str, keys: Sequence[str] | Mapping[str, Any]) -> str:
    return difflib.get_close_matches(key, list(keys), n=1, cutoff=0.0)[0]


def _did_you_mean(key: str, keys: Sequence[str] | Mapping[str, Any]) -> str:
    """`` (did you mean 'x'?)`` when a key is close to ``key``, else "" (no far-fetched guess)."""
    close = difflib.get_close_matches(key, list(keys), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---- type checking of overrides -------------------------------------------------------------------

def _describe(default: Any) -> str:
    if isinstance(default, bool):
        return "True or False"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, list):
        return f"a list like {_short_repr(default)}"
    if isinstance(default, dict):
        return "a mapping like {key: value}"
    return f"a {type(default).__name__}"


def _type_error(where: str, expected: str, value: Any) -> ConfigError:
    if value is None and expected == "a string":  # YAML reads null, ~ and an empty value as None
        return ConfigError(f"{where}: expected a string, got YAML null; for the setting None write None or \"None\" "
                           "(YAML reads null, ~ and an empty value as no value)")
    return ConfigError(f"{where}: expected {expected}, got {value!r}")


def _coerce(value: Any, default: Any, where: str) -> Any:
    """``value`` in the type of ``default`` (int -> float allowed), or a ConfigError naming ``where``."""
    if default is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)):
            return float(value)
    elif isinstance(default, list):
        return _coerce_list(value, default, where)
    elif isinstance(default, dict):
        return _coerce_dict(value, default, where)
    elif isinstance(value, type(default)):
        return value
    raise _type_error(where, _describe(default), value)


def _coerce_list(value: Any, default: list, where: str) -> list:
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise _type_error(where, _describe(default), value)
    if not default:
        return copy.deepcopy(value)
    templates = _element_templates(default)
    return [_coerce_element(item, templates, f"{where}[{index}]") for index, item in enumerate(value)]


def _element_templates(default: list) -> list:
    """One example per element type of a list default; nested lists are pooled, so that
    ``[[], [2, 3]]`` still means 'lists of integers'."""
    templates: dict[type, Any] = {}
    pooled: list = []
    for item in default:
        if isinstance(item, list):
            pooled.extend(item)
            templates.setdefault(list, pooled)
        else:
            templates.setdefault(type(item), item)
    return list(templates.values())


def _coerce_element(item: Any, templates: list, where: str) -> Any:
    if len(templates) == 1:
        return _coerce(item, templates[0], where)  # its error names the innermost bad element
    # An exact type match first, so that 2 stays an int in a list that mixes ints and floats.
    ordered = sorted(templates, key=lambda template: type(template) is not type(item))
    for template in ordered:
        try:
            return _coerce(item, template, where)
        except ConfigError:
            continue
    raise _type_error(where, " or ".join(_describe(template) for template in ordered), item)


def _coerce_dict(value: Any, default: dict, where: str) -> dict:
    """A mapping override updates the default's entries; each given entry is checked like a key."""
    if not isinstance(value, dict):
        raise _type_error(where, _describe(default), value)
    merged = copy.deepcopy(default)
    for key, item in value.items():
        if key not in default:
            raise ConfigError(f"{where}: unknown entry {key!r}; the closest valid entry is "
                              f"{_closest_key(str(key), [str(k) for k in default])!r}")
        merged[key] = _coerce(item, default[key], f"{where}.{key}")
    return merged


def _checked_value(key: str, value: Any, template: Any, where: str) -> Any:
    """``value`` for ``key`` in the type of ``template`` and inside the key's range: the check every value gets.

    An integer key refuses a fraction (``int()`` would truncate it later, silently) unless the key
    is in ``FRACTIONAL_INT_KEYS``, where the fraction is kept.
    """
    if key in FRACTIONAL_INT_KEYS and isinstance(value, float) and type(template) is int:
        checked = value
    else:
        checked = _coerce(value, template, where)
    _check_range(key, checked, where)
    return checked


# ---- value ranges ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Range:
    """Bounds of a number, or of every number in a list key; ``low``/``high`` are inclusive unless ``*_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    length: int | None = None  # a list key's required number of entries

    def admits(self, number: float) -> bool:
        """Whether one number lies inside the bounds."""
        above = self.low is None or (number > self.low if self.low_open else number >= self.low)
        below = self.high is None or (number < self.high if self.high_open else number <= self.high)
        return above and below

    def __str__(self) -> str:
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(bounds)


_AT_LEAST_1 = Range(1)
_NON_NEGATIVE = Range(0)
_POSITIVE = Range(0, low_open=True)
_FRACTION = Range(0, 1)  # 0 <= x <= 1
_POSITIVE_FRACTION = Range(0, 1, low_open=True)  # 0 < x <= 1

#: The allowed range of every numeric key, one rule per key (a list key's rule holds for each entry,
#: nested lists included). Checked wherever a value comes from; num_ssd_boxes is derived instead.
VALUE_RANGES: dict[str, Range] = {
    # schedule and optimiser
    "epoch_size": _AT_LEAST_1, "batch_size": _AT_LEAST_1, "eval_batch_size": _AT_LEAST_1,
    "lr": _POSITIVE, "lr_init": _NON_NEGATIVE, "lr_end_rate": _FRACTION, "warmup_epochs": _NON_NEGATIVE,
    "momentum": Range(0, 1, high_open=True), "weight_decay": _NON_NEGATIVE, "loss_scale": _POSITIVE,
    "pre_trained_epoch_size": _NON_NEGATIVE,
    # checkpoints, logging, evaluation during training
    "save_checkpoint_epochs": _AT_LEAST_1, "keep_checkpoint_max": _AT_LEAST_1, "log_interval": _AT_LEAST_1,
    "eval_start_epoch": _NON_NEGATIVE, "eval_interval": _AT_LEAST_1,
    # devices and data pipeline
    "device_id": _NON_NEGATIVE, "device_num": _AT_LEAST_1, "seed": _NON_NEGATIVE,
    "num_parallel_workers": _AT_LEAST_1, "all_reduce_fusion_config": _NON_NEGATIVE,
    # network and default boxes
    "img_shape": Range(1, length=2), "num_classes": Range(2),  # background plus at least one class
    "num_default": _AT_LEAST_1, "extras_in_channels": _AT_LEAST_1, "extras_out_channels": _AT_LEAST_1,
    "extras_strides": _AT_LEAST_1, "extras_ratio": _POSITIVE, "feature_size": _AT_LEAST_1, "steps": _AT_LEAST_1,
    "min_scale": _POSITIVE_FRACTION, "max_scale": _POSITIVE_FRACTION, "aspect_ratios": _POSITIVE,
    "prior_scaling": _POSITIVE, "num_addition_layers": _NON_NEGATIVE,
    # loss: matching and focal loss
    "match_threshold": _POSITIVE_FRACTION, "gamma": _NON_NEGATIVE, "alpha": _FRACTION,
    # augmentation
    "expand_max_ratio": Range(1), "color_jitter": _NON_NEGATIVE, "val_fraction": Range(0, 1, high_open=True),
    # post-processing at evaluation
    "nms_threshold": _POSITIVE_FRACTION, "min_score": Range(0, 1, high_open=True), "max_boxes": _AT_LEAST_1,
    # export
    "calib_images": _AT_LEAST_1,
}


def _numbers(value: Any) -> list:
    """Every number in a value, nested lists flattened (a scalar is a list of one)."""
    if isinstance(value, list):
        return [number for item in value for number in _numbers(item)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _check_range(key: str, value: Any, where: str) -> None:
    """A ConfigError naming ``where``, the value and the allowed range when ``value`` lies outside it."""
    rule = VALUE_RANGES.get(key)
    if rule is None:
        return
    is_list = isinstance(value, list)
    if rule.length is not None and is_list and len(value) != rule.length:
        raise ConfigError(f"{where}: {value!r} has the wrong length; {key} needs exactly {rule.length} entries, "
                          f"each {rule}")
    if not all(rule.admits(number) for number in _numbers(value)):
        raise ConfigError(f"{where}: {value!r} is out of range; {'each entry of ' if is_list else ''}{key} "
                          f"must be {rule}")


def _unknown_key(key: str, config_file: _ConfigFile, flag: bool) -> ConfigError:
    prefix = "--" if flag else ""
    if key in RETIRED_ZOO_KEYS:
        return ConfigError(f"{prefix}{key} is a model-zoo key this code does not read ({RETIRED_ZOO_KEYS[key]}); "
                           "remove it")
    return ConfigError(f"unknown key {prefix}{key} (not in {_display_path(config_file.path)}); the closest valid "
                       f"key is {prefix}{_closest_key(key, config_file.values)}")


def _validated_override(key: str, value: Any, config_file: _ConfigFile, where: str) -> Any:
    if key not in config_file.values:
        raise _unknown_key(key, config_file, flag=False)
    value = _checked_value(key, value, config_file.values[key], where)
    _check_choice(key, value, config_file, where)
    return value


# ---- building the Config ----------------------------------------------------------------------------

def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """The configuration in ``path`` with ``overrides`` applied and ``num_ssd_boxes`` derived.

    Overrides are checked exactly like command-line values: the key must exist in the file, the
    value must have the file value's type (an int may stand in for a float) and be an allowed value.
    A relative ``path`` not found from the working directory is looked up in the repository.
    """
    config_file = _read_config_file(path)
    checked = {key: _validated_override(key, value, config_file, f"overrides[{key!r}]")
               for key, value in (overrides or {}).items()}
    return _build_config(config_file, checked)


def _build_config(config_file: _ConfigFile, checked_overrides: Mapping[str, Any]) -> Config:
    """The file's values with the (already validated) overrides, checked and with num_ssd_boxes derived.

    A num_ssd_boxes written in the file is checked against the file's own anchor keys, and one
    given as an override against the final keys: overriding e.g. feature_size re-derives the count
    instead of clashing with the number the file wrote for its own anchors.
    """
    file_context = _display_path(config_file.path)
    config = Config({**config_file.values, **checked_overrides}, config_file.help, str(config_file.path),
                    config_file.choices)
    context = file_context
    if checked_overrides:
        context += " with overrides of " + ", ".join(checked_overrides)
    _check_class_count(config, context)
    derived = _count_default_boxes(config, context)
    if "num_ssd_boxes" in checked_overrides:
        _check_stated_box_count(checked_overrides["num_ssd_boxes"], derived, context)
    elif config_file.values.get("num_ssd_boxes", -1) != -1:
        file_count = derived
        if checked_overrides:
            file_count = _count_default_boxes(Config(config_file.values, source=str(config_file.path)), file_context)
        _check_stated_box_count(config_file.values["num_ssd_boxes"], file_count, file_context)
    config.num_ssd_boxes = derived
    return config


def save_resolved_config(config: Config, path: str | Path) -> Path:
    """Write ``config`` as one self-contained file in the model zoo's three-document format.

    Every value is written out (no ``__BASE__``), with the help lines and allowed values of the
    files it came from, so the file alone reproduces the run: ``load_config`` reads it back to the
    same values, and it can be copied and edited like any model-zoo config. Written through a
    temporary file, so a reader never sees half of it.
    """
    path = Path(path)
    values = config.to_dict()
    help_lines = {key: config._help[key] for key in values if key in config._help}
    choices = {key: allowed for key, allowed in config._choices.items() if key in values}
    header = (f"# Resolved configuration of {config._source}: every key written out, help lines in document 2,\n"
              "# allowed values in document 3. load_config / --config_path read it as it is.\n")
    documents = [values] + ([help_lines] if help_lines or choices else []) + ([choices] if choices else [])
    text = header + yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True, width=120,
                                       default_flow_style=None)
    temporary = temporary_path(path)
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def _check_class_count(config: Config, context: str) -> None:
    """num_classes sizes the network and classes maps names to labels: they must describe the same set.

    ``classes: []`` leaves both to the dataset: ``src.data.sources.resolve_classes`` sets them."""
    if config.get("classes") == []:
        return
    if "classes" in config and "num_classes" in config and len(config.classes) != config.num_classes:
        raise ConfigError(f"{context}: num_classes is {config.num_classes} but classes lists "
                          f"{len(config.classes)} names; make num_classes equal len(classes) (background included)")
    if not config.get("classes"):
        return
    if config.classes[0] != "background":  # label 0 is the background: a first real class would never be learnt
        raise ConfigError(f"{context}: classes must start with 'background' (label 0), got {config.classes[0]!r} "
                          f"first; write classes as ['background', {', '.join(repr(c) for c in config.classes[:2])}, ...]")
    repeated = sorted({name for name in config.classes if config.classes.count(name) > 1})
    if repeated:
        raise ConfigError(f"{context}: classes lists {', '.join(repr(name) for name in repeated)} more than once; "
                          "each name must be one label")


def _count_default_boxes(config: Config, context: str) -> int:
    # Imported here so the config layer loads (and its tests run) without the geometry module.
    from src.boxes.anchors import count_default_boxes

    try:
        return count_default_boxes(config)
    except ValueError as err:
        raise ConfigError(f"{context}: the default-box keys do not fit together: {err}") from err


def _check_stated_box_count(stated: Any, derived: int, context: str) -> None:
    if stated != -1 and (isinstance(stated, bool) or stated != derived):
        raise ConfigError(
            f"{context}: num_ssd_boxes is {stated!r} but img_shape, steps, feature_size, num_default and "
            f"aspect_ratios give {derived} default boxes; set num_ssd_boxes to -1 (derived automatically) "
            f"or to {derived}")


# ---- command line -----------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None, default_config_path: str | Path = DEFAULT_CONFIG_PATH,
               description: str = "") -> Config:
    """The entry scripts' Config: ``--config_path`` picks the file, ``--key value`` overrides any key.

    ``argv`` defaults to ``sys.argv[1:]``. ``--help`` prints every key with its help line and
    default, then exits 0; a bad option prints one error line and exits 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "ssd"
    try:
        pairs = _pair_tokens(args)
        config_path = default_config_path
        for key, raw in pairs:
            if key == "config_path":
                config_path = _require_value(key, raw)
        config_file = _read_config_file(config_path)
        if any(key == "help" for key, _ in pairs):
            print(_help_text(config_file, prog, description))
            sys.exit(0)
        overrides = {key: _cli_value(key, raw, config_file) for key, raw in pairs if key != "config_path"}
        return _build_config(config_file, overrides)
    except (ConfigError, MissingKeyError) as err:
        _exit_with_error(prog, str(err))


def command_line_keys(argv: Sequence[str] | None = None) -> set[str]:
    """The keys given explicitly on the command line (``--key value``, ``--key=value``, bare ``--flag``).

    For settings whose default belongs to the entry script rather than to the file: export.py
    exports batch 1 unless ``--batch_size`` is given, because the file's batch_size is the
    training batch. ``argv`` defaults to ``sys.argv[1:]``; call it after ``parse_args`` accepted it.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return {key for key, _ in _pair_tokens(args)} - {"help"}


def command_line_value(argv: Sequence[str], key: str) -> str | None:
    """The raw value of ``--key`` on the command line (the last one given), None when it is not there."""
    values = [raw for name, raw in _pair_tokens(list(argv)) if name == key]
    return values[-1] if values else None


def _pair_tokens(args: list[str]) -> list[tuple[str, str | None]]:
    """``--key value`` / ``--key=value`` / bare ``--flag`` tokens as (key, raw value or None)."""
    pairs: list[tuple[str, str | None]] = []
    position = 0
    while position < len(args):
        token = args[position]
        position += 1
        if token in ("-h", "--help"):
            pairs.append(("help", None))
            continue
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"unexpected argument {token!r}; options look like --key value or --key=value")
        key, equals, raw = token[2:].partition("=")
        if not equals:
            has_value = position < len(args) and not args[position].startswith("--")
            raw = args[position] if has_value else None
            if has_value:
                position += 1
        pairs.append((key, raw))
    return pairs


def _require_value(key: str, raw: str | None) -> str:
    if raw is None:
        raise ConfigError(f"--{key} needs a value: --{key} VALUE or --{key}=VALUE")
    return raw


def _cli_value(key: str, raw: str | None, config_file: _ConfigFile) -> Any:
    """A command-line string turned into the type of the file's value, then validated."""
    where = f"--{key}"
    if key not in config_file.values:
        raise _unknown_key(key, config_file, flag=True)
    default = config_file.values[key]
    if raw is None and isinstance(default, bool):
        return _validated_override(key, True, config_file, where)  # a bare --flag switches it on
    raw = _require_value(key, raw)
    if isinstance(default, str):
        return _validated_override(key, raw, config_file, where)
    if isinstance(default, bool):
        return _validated_override(key, _parse_bool(raw, where), config_file, where)
    return _validated_override(key, _parse_literal(raw), config_file, where)


def _parse_bool(raw: str, where: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise _type_error(where, "True, False, true, false, 1 or 0", raw)


def _parse_literal(raw: str) -> Any:
    """A YAML literal (``[300, 300]``, ``1e-3``), else a Python literal (``(1, 2)``), else the text itself."""
    try:
        value = yaml.load(raw, Loader=_YamlLoader)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return value


def _short_repr(value: Any, limit: int = 90) -> str:
    """repr cut to ``limit`` characters, so that --help shows the 81 class names on one line."""
    text = repr(value)
    if len(text) <= limit:
        return text
    count = f" ({len(value)} items)" if isinstance(value, (list, dict)) else ""
    return f"{text[:limit]} ...{count}"


def _metavar(default: Any) -> str:
    if default is None:
        return "VALUE"
    if isinstance(default, (list, dict)):
        return "'[...]'" if isinstance(default, list) else "'{...}'"
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR"}.get(type(default), "VALUE")


def _help_text(config_file: _ConfigFile, prog: str, description: str) -> str:
    lines = [f"usage: {prog} [--config_path PATH] [--KEY VALUE | --KEY=VALUE ...]", ""]
    if description:
        lines += [description, ""]
    lines += [f"options (defaults from {_display_path(config_file.path)}):",
              "  -h, --help", "      show this message and exit",
              "  --config_path PATH", f"      YAML configuration file (default: {_display_path(config_file.path)})"]
    for key, default in config_file.values.items():
        text = config_file.help.get(key, "(no help line in this file)")
        details = f"default: {_short_repr(default)}"
        if key in config_file.choices:
            details += f"; choices: {', '.join(map(str, config_file.choices[key]))}"
        lines += [f"  --{key} {_metavar(default)}", f"      {text} ({details})"]
    lines += ["", "Lists are given as YAML or Python literals (--img_shape \"[320, 320]\"); booleans as "
                  "True/False/true/false/1/0; a bare boolean --flag means True."]
    return "\n".join(lines)


def _exit_with_error(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message} (--help lists every key)", file=sys.stderr)
    sys.exit(2)
