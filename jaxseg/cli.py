"""Command-line error reporting shared by every entry point.

Known errors (a config key, a data file, a checkpoint, user input) are printed as
one or two lines naming the key or file, with a hint, and the process exits with
status 2 (usage / config) or 1; the traceback only with `--verbose`. A preempted
run (SIGTERM / Ctrl-C, checkpoint written) exits 0 with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from jaxseg.data.errors import DataError
from jaxseg.errors import ConfigError, WorkdirBusyError

USAGE_ERRORS: tuple[type[BaseException], ...] = (ConfigError,)


def _known_errors() -> tuple[type[BaseException], ...]:
  # Imported lazily: the trainer pulls in jax, and a CLI may fail before it needs it.
  from jaxseg.models.convert import CheckpointMismatchError
  from jaxseg.train.checkpoint import CheckpointLoadError, CheckpointWriteError
  from jaxseg.train.step import NonFiniteLossError

  return (
      ConfigError,
      DataError,
      CheckpointLoadError,
      CheckpointWriteError,
      CheckpointMismatchError,
      NonFiniteLossError,
      FileNotFoundError,
      NotADirectoryError,
      IsADirectoryError,
      PermissionError,
      ValueError,
      WorkdirBusyError,
  )


def verbose_requested(argv: list[str] | None = None) -> bool:
  argv = sys.argv if argv is None else argv
  return any(a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for a in argv)


def format_error(error: BaseException) -> str:
  """'error: <message>' (one line per line of the message, at most two) + the --verbose hint."""
  text = str(error).strip().strip("'\"")
  if isinstance(error, KeyError) and error.args:
    text = str(error.args[0])
  lines = [line for line in text.replace("\\n", "\n").splitlines() if line.strip()][:2] or [
      type(error).__name__
  ]
  return "error: " + "\n  ".join(lines) + "\n  (rerun with --verbose for the traceback)"


def exit_status(error: BaseException) -> int:
  return 2 if isinstance(error, USAGE_ERRORS) else 1


@contextlib.contextmanager
def user_errors(verbose: bool | None = None) -> Iterator[None]:
  """Turns known errors into a short message and an exit status (see the module docstring)."""
  from jaxseg.train.preemption import Preempted, StopRequested

  verbose = verbose_requested() if verbose is None else verbose
  try:
    yield
  except (Preempted, StopRequested) as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(0)
  except _known_errors() as e:
    if verbose:
      raise
    print(format_error(e), file=sys.stderr, flush=True)
    sys.exit(exit_status(e))
  except KeyboardInterrupt:
    if verbose:
      raise
    print("interrupted", file=sys.stderr, flush=True)
    sys.exit(130)


def quiet_library_logs() -> None:
  """Keeps orbax's own log records (its save/restore warnings, the tracebacks of a failed
  background write) off the console: what they mean reaches the user as one line from jaxseg;
  `--verbose` shows them."""
  import logging

  class _DropOrbax(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
      return "/orbax/" not in record.pathname.replace("\\", "/")

  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_DropOrbax())
  try:
    from absl import logging as absl_logging

    absl_logging.get_absl_handler().addFilter(_DropOrbax())
  except ImportError:
    pass


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors (a missing or unknown option, a bad choice) are one line and a
  hint (exit status 2), not the full usage text; `--help` is unchanged."""

  def error(self, message: str):
    print(
        f"error: {message}\n  hint: {self.prog} --help lists the options",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(2)


def _config_path(argv: list[str]) -> str:
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
  return spec.split(":", 1)[0]


def _raised_by_config_file(argv: list[str], error: BaseException) -> bool:
  import traceback

  path = os.path.abspath(_config_path(argv))
  if isinstance(error, SyntaxError):
    return True
  return any(os.path.abspath(f.filename) == path for f in traceback.extract_tb(error.__traceback__))


def config_file_error(argv: list[str], error: BaseException) -> str:
  """One line for an exception raised while loading `--config=FILE[:arg]`: the file, where in it
  (line of a syntax error, or the file's own frame that raised), the exception."""
  import traceback

  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
  path = spec.split(":", 1)[0]
  if isinstance(error, SyntaxError):
    where = f"{error.filename}:{error.lineno}" if error.lineno else path
    return f"--config={spec}: {where}: {error.msg}"
  frames = [
      f
      for f in traceback.extract_tb(error.__traceback__)
      if f.filename == os.path.abspath(path) or f.filename == path
  ]
  where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
  message = " ".join(str(error).split()) or type(error).__name__
  return f"--config={spec}: {type(error).__name__}: {message}{where}"


def define_config_flags():
  """(`--config` flag, `--verbose` flag): what every config-driven absl command defines (the config file
  is required and locked, so `--config.x=...` overrides must name existing keys). Call in `main`, so that
  importing the command's module defines no flags."""
  from absl import flags
  from ml_collections import config_flags

  config = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file[:arg].", lock_config=True
  )
  verbose = flags.DEFINE_bool("verbose", False, "Show full tracebacks for known errors.")
  flags.mark_flags_as_required(["config"])
  return config, verbose


def run_absl(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)`, with config-override parse errors (an unknown `--config.x` key, a
  bad value) reported in one or two lines (exit status 2) instead of a traceback."""
  from absl import app, flags

  def parse(argv):
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is not None and not os.path.isfile(spec.split(":", 1)[0]):
      print(
          f"error: --config={spec}: no such file {spec.split(':', 1)[0]}\n"
          "  hint: configs/ holds one file per method (configs/<method>.py[:variant])",
          file=sys.stderr,
          flush=True,
      )
      sys.exit(2)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      if verbose_requested(argv):
        raise
      # config_flags embeds the config file's traceback: keep its last line (the cause).
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      flag = lines[0].rstrip(":") if lines else "flags"
      cause = lines[-1] if len(lines) > 1 else ""
      print(f"error: {flag}" + (f"\n  {cause}" if cause else ""), file=sys.stderr, flush=True)
      sys.exit(2)
    except Exception as e:  # noqa: BLE001  (a config file that does not parse or raises)
      if verbose_requested(argv) or not _raised_by_config_file(argv, e):
        raise  # an override's error: reported below
      print(f"error: {config_file_error(argv, e)}", file=sys.stderr, flush=True)
      sys.exit(2)

  try:
    app.run(main, flags_parser=parse)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if flags.FLAGS.is_parsed() or verbose_requested():
      raise
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    text = " ".join(text.replace("\\n", " ").replace("\\'", "'").split()).strip("'\" ")
    key, _, rest = text.partition("' ")
    if rest and " " not in key:  # ml_collections: "'key'\nDid you mean ..."
      flag = next((a.split("=")[0] for a in sys.argv if a.startswith("--config.") and key in a), "")
      text = f"{flag or 'config'}: unknown key {key!r}. {rest}"
    print(
        f"error: {text}\n"
        "  hint: a method reads only the keys of its default_config(); see configs/<method>.py",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(2)
