"""One workdir, one job: an exclusive lock on `workdir/.lock`, taken by launch.py's process 0.

`fcntl.flock` is released by the kernel when the holding process ends, however it ends, so a crashed
or killed job leaves no stale lock; the file itself stays and names the last holder (pid, host, start
time) for the message a second job prints. flock is advisory and local: on a network file system
that does not support it, the lock may not hold across machines.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from typing import IO

from jaxseg.errors import WorkdirBusyError

LOCK_NAME = ".lock"


def lock_workdir(workdir: str) -> IO[str]:
  """Takes the workdir's lock for the life of this process (keep the returned file open).

  Raises:
    WorkdirBusyError: another live process holds it; the message names that job.
    PermissionError: the workdir cannot be written (one line naming it and the cause).
  """
  path = os.path.join(workdir, LOCK_NAME)
  try:
    os.makedirs(workdir, exist_ok=True)
    handle = open(path, "a+")
  except OSError as e:  # read-only file system, no permission, a file in the way
    raise PermissionError(f"cannot write in the workdir {workdir}: {e.strerror or e}") from None
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    holder = handle.read().strip() or "another process"
    handle.close()
    raise WorkdirBusyError(
        f"{workdir} is in use by {holder}\nhint: wait for that job to end, or use another --workdir"
    ) from None
  handle.seek(0)
  handle.truncate()
  handle.write(
      f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
  )
  handle.flush()
  return handle
