"""`ConfigError`: a config names an unknown key or holds an invalid value.

A leaf module (imports nothing from jaxseg), so every layer (config parsing, the trainer, the
optimiser factory, the methods) can raise it without importing another.
"""


class ConfigError(ValueError):
  """A config names an unknown key or holds an invalid value; the message names the key."""


class WorkdirBusyError(RuntimeError):
  """Another job holds the workdir's lock; the message names it."""
