"""Errors raised by the data layer."""


class DataError(ValueError):
  """Bad input data: a missing, corrupt or inconsistent file or example.

  The message always names the file (or the example key / source) and the
  problem, so a failing worker process points straight at the culprit.
  """
