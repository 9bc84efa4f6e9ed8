"""Config helpers: the `:arg` mini-syntax of config strings and strict key checking.

A config file is the whole experiment. Every config starts from its method's
`default_config()` (a locked `ConfigDict` that names every key the method
reads), so a misspelt key in a config file or on the command line is an error
at once, not a silently ignored setting.
"""

from __future__ import annotations

import ast
from typing import Any

import ml_collections

from jaxseg.errors import ConfigError


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses the `:arg` part of `--config=configs/x.py:arg`.

  Accepts `""`, a bare first positional value (`:synthetic`, bound to the first
  default's name), bare boolean flags (`:runlocal`) or `k=v,k2=v2`. Types follow the defaults; booleans are
  parsed strictly. Unknown names are a `ConfigError`.

  Example: `parse_arg("synthetic,steps=50", variant="paper", steps=0)`
    -> ConfigDict(variant="synthetic", steps=50).
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  names = list(defaults)
  for position, item in enumerate(a for a in arg.split(",") if a):
    if "=" in item:
      key, value = item.split("=", 1)
    elif isinstance(defaults.get(item.strip()), bool):
      key, value = item, "true"  # A bare boolean name is a flag: `:runlocal`.
    elif position == 0 and names:
      key, value = names[0], item
    else:
      raise ConfigError(f"config arg {item!r}: expected key=value (known keys: {names})")
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f"unknown config arg {key!r}; known: {names}")
    result[key] = _parse_value(key, value.strip(), defaults[key])
  return result


def _parse_value(key: str, value: str, default: Any) -> Any:
  if isinstance(default, bool):
    if value.lower() in ("true", "1", "yes"):
      return True
    if value.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"config arg {key}={value!r}: expected a boolean")
  if isinstance(default, str) or default is None:
    return value
  try:
    parsed = ast.literal_eval(value)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f"config arg {key}={value!r}: cannot parse ({e})") from None
  if isinstance(default, float) and isinstance(parsed, int):
    parsed = float(parsed)
  if not isinstance(parsed, type(default)):
    raise ConfigError(f"config arg {key}={value!r}: expected {type(default).__name__}")
  return parsed


def check_keys(
    config: ml_collections.ConfigDict,
    reference: ml_collections.ConfigDict,
    *,
    open_sections: tuple[str, ...] = (),
) -> None:
  """Raises `ConfigError` naming every key of `config` absent from `reference`.

  `reference` is the method's `default_config()`: the set of keys the method
  reads. Nested dicts are checked recursively; values are not compared.

  Args:
    open_sections: sections whose entries the config names itself (e.g. 'optimizer.groups': a
      group per name), matched against the end of a dotted key path; their entries are not
      compared with `reference`, the code that reads them checks them (e.g. the optimiser factory).
  """
  unknown = []
  _collect_unknown(config, reference, "", tuple(open_sections), unknown)
  if unknown:
    raise ConfigError(
        f"unknown config key(s): {', '.join(unknown)}. The method reads only the keys of "
        "its default_config(); check the spelling."
    )


def is_open_section(path: str, open_sections: tuple[str, ...]) -> bool:
  """Whether the dotted `path` ends with one of `open_sections` (see `check_keys`)."""
  return any(path == s or path.endswith("." + s) for s in open_sections)


def _collect_unknown(config, reference, prefix, open_sections, unknown):
  for key in config.keys():
    path = f"{prefix}{key}"
    if key not in reference:
      if not (
          is_open_section(prefix[:-1], open_sections)
          and isinstance(config[key], ml_collections.ConfigDict)
      ):
        unknown.append(path)
      continue
    value, ref = config[key], reference[key]
    if isinstance(value, ml_collections.ConfigDict) and isinstance(ref, ml_collections.ConfigDict):
      _collect_unknown(value, ref, path + ".", open_sections, unknown)


def apply_common_args(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
  """The `:steps=N` and `:runlocal` args every method config accepts (in place).

  runlocal turns the config into a seconds-long smoke run on the synthetic data:
  4 steps, logging and checkpoints every 2, 64 train / 16 eval scenes.
  """
  if arg.steps:
    config.train.total_steps = arg.steps
  if arg.runlocal:
    config.train.total_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    config.data.synthetic.num_train = 64
    config.data.synthetic.num_eval = 16
