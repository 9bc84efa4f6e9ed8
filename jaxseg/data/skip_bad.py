"""`data.skip_bad`: a training source that replaces unreadable examples instead of stopping the run.

`SkipBadSource(source)[i]` is `source[i]`, or, when reading it raises `DataError`, `source[j]` for
the next readable index j = i + 1, i + 2, ... (wrapping around). The replacement depends only on the
index and the files, so a run (and its resume) stays reproducible. Each bad index is reported once
per process with a warning naming the file (the `DataError` message) and a running count, and is
not read again. `datasets.build_source` applies it to the train split when `data.skip_bad` is set.
"""

from __future__ import annotations

import sys
from typing import Any

from jaxseg.data.errors import DataError


class SkipBadSource:
  """Random-access source wrapper: bad examples are replaced by the next readable one (see above)."""

  def __init__(self, source, name: str = "train"):
    self.source, self.name = source, name
    self.bad: dict[int, str] = {}  # index -> first line of its DataError (this process)

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:
    return f"SkipBadSource({self.source!r})"

  def __getattr__(self, attr: str) -> Any:
    if attr in ("source", "name", "bad"):  # not yet set (unpickling): no recursion
      raise AttributeError(attr)
    return getattr(self.source, attr)

  @property
  def num_skipped(self) -> int:
    """Bad examples met so far in this process."""
    return len(self.bad)

  def __getitem__(self, index: int) -> dict[str, Any]:
    n = len(self.source)
    index = int(index)
    if not -n <= index < n:
      raise IndexError(f"{self.name}: index {index} out of range for {n} examples")
    index %= n
    for offset in range(n):
      j = (index + offset) % n
      if j in self.bad:
        continue
      try:
        return self.source[j]
      except DataError as e:
        self.bad[j] = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(
            f"warning: data.skip_bad: skipping {self.name} example {j}: {self.bad[j]} "
            f"({len(self.bad)} bad example{'s' if len(self.bad) > 1 else ''} skipped so far)",
            file=sys.stderr,
            flush=True,
        )
    raise DataError(
        f"{self.name}: all {n} examples are unreadable (data.skip_bad); first: "
        f"{next(iter(self.bad.values()), '?')}"
    )
