"""jaxseg launcher: one process per host.

  python launch.py --config=configs/<method>.py[:variant] --workdir=DIR [--config.a.b=value ...]

Dispatches on `config.method` (see `jaxseg/methods/__init__.py`) and runs the
stages named in `config.stages`. Started as several processes (TPU pod,
SLURM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or the
--coordinator_address/--num_processes/--process_id flags), it first calls
`jax.distributed.initialize()`; each process then reads its own data shard.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show full tracebacks for known errors.")
_RESTART = flags.DEFINE_bool(
    "restart",
    False,
    "Train a stage whose checkpoints were all found damaged (checkpoints_damaged/) from step 0.",
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir even if training-relevant config keys changed."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax and grain log every save/restore at INFO; keep the console for progress.
    logging.set_verbosity(logging.WARNING)
  from jaxseg import cli

  if not _VERBOSE.value:
    cli.quiet_library_logs()
  with cli.user_errors(_VERBOSE.value):
    from jaxseg.train import multihost

    multihost.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    import jax

    from jaxseg import methods

    config = _CONFIG.value
    method = methods.get_method(config.method)
    methods.check_config_keys(config)
    methods.check_batch_sizes(config)
    workdir = _WORKDIR.value
    if jax.process_index() == 0:  # one job per workdir; held until this process ends
      from jaxseg.train.workdir_lock import lock_workdir

      _lock = lock_workdir(workdir)  # noqa: F841  (kept open: closing it releases the lock)
    methods.check_resume_config(config, workdir, allow_change=_ALLOW_CONFIG_CHANGE.value)
    methods.check_no_silent_restart(workdir, restart=_RESTART.value)
    if jax.process_index() == 0:
      methods.save_config(config, workdir)
    method.run(config, workdir)


if __name__ == "__main__":
  from jaxseg.cli import run_absl  # noqa: E402  (after the flag definitions above)

  run_absl(main)
