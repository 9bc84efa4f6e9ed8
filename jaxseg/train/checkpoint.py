"""Checkpoints: orbax `CheckpointManager` over the train state and the data iterator.

A checkpoint holds two items:
  state: the train-state pytree (step, params, model_state, opt_state, rng, ...),
         saved asynchronously, restored directly into its shardings;
  data:  this process's grain iterator state (one JSON file per process), so a
         resumed run reads exactly the batch the interrupted run would have.

Orbax writes each step into a temporary folder and renames it only when the
save is complete, so a crash mid-save leaves the previous checkpoint as the
latest usable one.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxseg.train.sharding import leaf_path


class IteratorState:
  """The grain iterator state captured after a given batch, in the shape grain's

  orbax handler expects (`get_state() -> bytes`, `set_state(bytes)`). The
  prefetching loader runs ahead of the step, so the live iterator cannot be
  saved directly: we save the state recorded with the last consumed batch.
  """

  def __init__(self, state: bytes = b""):
    self.state = state

  def get_state(self) -> bytes:
    return self.state

  def set_state(self, state: bytes) -> None:
    self.state = state

  def start_prefetch(self) -> None:  # Called by grain's handler after restore.
    pass


class CheckpointLoadError(RuntimeError):
  """No checkpoint of a workdir could be loaded."""


class IncompatibleCheckpointError(CheckpointLoadError):
  """A readable checkpoint holds another model than the config builds (its tree or shapes differ)."""


def _shapes(tree) -> dict[str, tuple]:
  """{'/'-joined path: (shape, dtype name)} of a state tree's array leaves (PRNG keys left out: their
  saved form is raw data)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
    if shape is None or (dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)):
      continue
    out[leaf_path(path)] = tuple(shape)
  return out


def compare_with_checkpoint(step_dir: str, abstract_state: Any) -> list[str]:
  """The differences between a saved train state's tree / shapes and `abstract_state`'s (empty when
  they match). Reads only the checkpoint's metadata.

  Raises:
    Exception: whatever orbax raises when the metadata does not read (a damaged checkpoint).
  """
  metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / "state")
  saved = _shapes(getattr(metadata, "tree", metadata))
  wanted = {k: v for k, v in _shapes(abstract_state).items() if not k.startswith("rng")}
  saved = {k: v for k, v in saved.items() if not k.startswith("rng")}
  diffs = [(k, "not in the checkpoint") for k in set(wanted) - set(saved)]
  diffs += [(k, "only in the checkpoint") for k in set(saved) - set(wanted)]
  diffs += [
      (k, f"checkpoint {saved[k]} vs config {wanted[k]}")
      for k in set(saved) & set(wanted)
      if saved[k] != wanted[k]
  ]
  # The parameters first: the optimiser's buffers mirror them.
  order = ("params/", "model_state/", "extra/")
  rank = lambda k: next((i for i, p in enumerate(order) if k.startswith(p)), len(order))  # noqa: E731
  return [f"{k}: {what}" for k, what in sorted(diffs, key=lambda d: (rank(d[0]), d[0]))]


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  text = text if len(text) <= 200 else text[:197] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


class CheckpointWriteError(RuntimeError):
  """A checkpoint cannot be written (a file in the way, read-only or full disk); the checkpoints
  already written are untouched."""


# Room a save needs beyond the state's bytes (metadata, the iterator state, orbax's temporary files).
_SAVE_MARGIN_BYTES = 8 << 20


def ensure_writable_folder(path: str) -> None:
  """Creates `path` if needed and checks a file can be written in it, before any training step.

  Raises:
    CheckpointWriteError: one line naming the folder and the cause.
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise CheckpointWriteError(f"{path} is a file, not a folder: move it out of the way and rerun")
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_probe{os.getpid()}")
    with open(probe, "wb") as f:
      f.write(b"\0" * 4096)
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as e:
    raise CheckpointWriteError(f"cannot write checkpoints in {path}: {e.strerror or e}") from None


def state_bytes(state: Any) -> int:
  """Bytes of a train state's arrays (this process's shards), from shapes: no device sync."""
  total = 0
  for leaf in jax.tree.leaves(state):
    if hasattr(leaf, "addressable_shards"):
      total += sum(s.data.nbytes for s in leaf.addressable_shards)
    elif hasattr(leaf, "nbytes"):
      total += int(leaf.nbytes)
  return total


class Checkpointer:
  """Saves and restores (train_state, iterator state) under `workdir/checkpoints`.

  Write failures end the run with `CheckpointWriteError` (one line: the folder and the cause) and
  never hang: the folder is checked before training, free space before each save, and a failed
  asynchronous save is reported at the next save or wait.
  """

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.damaged_directory = os.path.abspath(os.path.join(workdir, "checkpoints_damaged"))
    self._keep, self._async = keep, async_save
    if jax.process_index() == 0:
      ensure_writable_folder(self.directory)
    self._manager = self._make_manager()

  def _make_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory,
        item_names=("state", "data"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=self._keep, create=True, enable_async_checkpointing=self._async
        ),
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest_usable(self, abstract_state: Any) -> tuple[int, Any, bytes] | None:
    """The newest checkpoint that loads: (step, state, iterator state), or None if there is none.

    A checkpoint that fails to load (truncated array file, missing metadata or data-iterator
    file, ...) is reported in one line, moved to `workdir/checkpoints_damaged/` (not deleted)
    and the next older one is tried. A checkpoint that reads but holds another model (its tree or
    shapes differ from `abstract_state`'s) is not damaged: nothing is moved and the run stops.

    Raises:
      IncompatibleCheckpointError: the newest readable checkpoint holds another model.
      CheckpointLoadError: checkpoints exist but none of them loads.
    """
    failures = []
    for step in reversed(self.all_steps()):
      try:
        differences = compare_with_checkpoint(
            os.path.join(self.directory, str(step)), abstract_state
        )
      except Exception:  # noqa: BLE001  (metadata that does not read: damage, handled below)
        differences = []
      if differences:
        # Another model than the config's, not damage: nothing is moved, the run stops here.
        shown = "; ".join(differences[:4])
        more = f" (+{len(differences) - 4} more)" if len(differences) > 4 else ""
        raise IncompatibleCheckpointError(
            f"{self.directory}/{step} holds another model than the config builds: {shown}{more}\n"
            "hint: use a new --workdir for a changed model, or undo the config change; the "
            "checkpoints are untouched"
        )
      try:
        state, data = self.restore(step, abstract_state)
        return step, state, data
      except Exception as e:  # noqa: BLE001  (any failure to load = damaged; the cause is reported)
        cause = _one_line(e)
        failures.append(f"step {step}: {cause}")
        moved = self._move_aside(step)
        print(
            f"checkpoint step {step} in {self.directory} does not load ({cause}); "
            f"moved to {moved}, trying the previous one",
            flush=True,
        )
    if failures:
      raise CheckpointLoadError(
          f"no checkpoint in {self.directory} loads ({'; '.join(failures)}); the damaged ones are in "
          f"{self.damaged_directory}. Delete the workdir's checkpoints to start over."
      )
    return None

  def _move_aside(self, step: int) -> str:
    self._manager.wait_until_finished()
    self._manager.close()
    target = os.path.join(self.damaged_directory, str(step))
    if jax.process_index() == 0:
      os.makedirs(self.damaged_directory, exist_ok=True)
      suffix = 0
      while os.path.exists(target):
        suffix += 1
        target = os.path.join(self.damaged_directory, f"{step}.{suffix}")
      os.replace(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"jaxseg_damaged_checkpoint_{step}")
    self._manager = self._make_manager()
    return target

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, iterator_state: bytes) -> None:
    self.check_for_errors()
    self._check_free_space(step, state)
    try:
      self._manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=grain.checkpoint.CheckpointSave(IteratorState(iterator_state)),
          ),
          force=True,
      )
    except Exception as e:  # noqa: BLE001  (any write failure: one line naming the folder)
      raise self._write_error(e) from None

  def _check_free_space(self, step: int, state: Any) -> None:
    import shutil

    needed = state_bytes(state) + _SAVE_MARGIN_BYTES
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      raise CheckpointWriteError(
          f"not enough disk space for checkpoint step {step} in {self.directory}: {free >> 20} MiB "
          f"free, about {needed >> 20} MiB needed; free space and rerun (the checkpoints written "
          "so far are intact)"
      )

  def _write_error(self, error: BaseException) -> CheckpointWriteError:
    if isinstance(error, CheckpointWriteError):
      return error
    return CheckpointWriteError(
        f"writing a checkpoint in {self.directory} failed: {_one_line(error)[:300]} (the "
        "checkpoints written before are intact; rerun resumes from the newest)"
    )

  def check_for_errors(self) -> None:
    """Raises `CheckpointWriteError` if an earlier asynchronous save failed."""
    try:
      self._manager.check_for_errors()
    except Exception as e:  # noqa: BLE001
      raise self._write_error(e) from None

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, bytes]:
    """Restores step `step` into `abstract_state`'s shapes, dtypes and shardings.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` with `sharding` set.
    Returns:
      (state, iterator_state_bytes).
    """
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(IteratorState()),
        ),
    )
    return restored["state"], restored["data"].get_state()

  def restore_state_only(self, step: int, abstract_state: Any) -> Any:
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    return restored["state"]

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._write_error(e) from None

  def close(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._write_error(e) from None
    finally:
      self._manager.close()


class BestCheckpointer:
  """The best train state by an evaluation metric, under `workdir/checkpoints_best`.

  Orbax's best-checkpoint support (`best_fn`, `best_mode`, `max_to_keep=1`): each
  evaluation during training offers its state with its metrics and orbax keeps
  the best one, next to the latest ones in `checkpoints/`.
  """

  def __init__(self, workdir: str, *, metric: str, mode: str = "max"):
    if mode not in ("max", "min"):
      raise ValueError(f"train.best_mode={mode!r}: expected 'max' or 'min'")
    self.metric = metric
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints_best"))
    if jax.process_index() == 0:
      ensure_writable_folder(self.directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_names=("state",),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1,
            create=True,
            best_fn=self._score,
            best_mode=mode,
            keep_checkpoints_without_metrics=False,
            enable_async_checkpointing=False,
        ),
    )

  def _score(self, metrics: dict) -> float:
    if self.metric not in metrics:
      raise KeyError(f"train.best_metric={self.metric!r}: the evaluator returned {sorted(metrics)}")
    return float(metrics[self.metric])

  def save(self, step: int, state: Any, metrics: dict) -> None:
    self._score(metrics)  # A missing metric is an error now, not at orbax's cleanup.
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
        metrics={k: float(v) for k, v in metrics.items()},
        force=True,
    )

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def restore_state_only(self, step: int, abstract_state: Any) -> Any:
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    return restored["state"]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_entries(directory: str, step: int, abstract: Any) -> Any:
  """Some entries of the train state saved at `directory/<step>`, nothing else read.

  Args:
    directory: a `checkpoints/` or `checkpoints_best/` folder.
    abstract: a dict of some of the saved state's keys (nested subsets too, e.g.
      {'params': {'segmenter': ...}, 'model_state': ...}) with `jax.ShapeDtypeStruct` leaves that carry
      shardings: the shapes a network's `init` gives, so no optimiser or data is needed to load it.
  Returns:
    `abstract` filled with the saved arrays.
  """
  path = os.path.join(directory, str(step), "state")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no saved train state at step {step}")
  args = ocp.args.PyTreeRestore(
      item=abstract,
      restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
      partial_restore=True,
  )
  with ocp.PyTreeCheckpointer() as checkpointer:
    return checkpointer.restore(path, args=args)
