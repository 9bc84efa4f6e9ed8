"""Helpers for tests that run jaxseg in a subprocess and interrupt it."""

import json
import os
import signal
import time


def signal_after_checkpoint(proc, checkpoint_dir, min_step=1, sig=signal.SIGKILL, timeout=300):
  """Sends `sig` to `proc` as soon as `checkpoint_dir` holds a step >= `min_step`; returns its output.

  The caller asserts the return code: a run that finished before the checkpoint appeared was not
  interrupted, which the test must see.
  """
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(checkpoint_dir) and any(
        d.isdigit() and int(d) >= min_step for d in os.listdir(checkpoint_dir)
    ):
      break
    time.sleep(0.02)
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=timeout)
  return out


def iterator_state(workdir, step):
  """The data-iterator state saved with checkpoint `step` (process 0 of 1)."""
  path = os.path.join(workdir, "checkpoints", str(step), "data", "process_0-of-1.json")
  with open(path) as f:
    return json.load(f)


def one_device_env():
  """The environment for a launch.py subprocess on one CPU device (as the seed studies measure:
  `jaxseg.tools.results.one_device_env`), not the test session's 8 fake devices."""
  from jaxseg.tools import results

  return results.one_device_env()
