"""Test session set-up: 8 fake CPU devices so sharding tests can build real meshes, and one persistent
XLA compilation cache per test run, shared by both pytest workers and every `launch.py` subprocess they
start (the environment is inherited), so a program compiled by one test is not compiled again by another.

The flags must be set before jax is imported anywhere in the session.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _compilation_cache_dir() -> str:
  """One folder per run: pytest-xdist gives its workers a shared run id; a plain pytest process uses its
  own pid. Per run, not per machine, so a CI run measures what a clean clone costs."""
  run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
  return os.path.join(tempfile.gettempdir(), "jaxseg-test-xla-cache", run)


os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _compilation_cache_dir())
# Cache every compilation: most of the suite's programs compile in well under the default 1 s floor but
# are compiled again by the next subprocess of the same config.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Longest test files first (measured in CI, `--durations=30`): with `--dist loadfile` a worker takes the
# next file when it is free, so a long file that starts last leaves the other worker idle at the end.
# Files not listed keep their order after these; the tests inside a file keep theirs.
LONGEST_FIRST = (
    "test_uda_method.py",
    "test_seam_seeds.py",
    "test_hn_method.py",
    "test_launch.py",
    "test_vos_method.py",
    "test_uda_trajectory.py",
    "test_seam_method.py",
    "test_eight_devices.py",
    "test_trainer_extensions.py",
    "test_reliability.py",
    "test_seam_trajectory.py",
    "test_trainer.py",
    "test_benchmarks.py",
)


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _hypothesis_profile() -> None:
  """Property tests draw the same examples on every run (derandomized), so CI is not a lottery and a
  failure reproduces; `HYPOTHESIS_PROFILE=explore` draws fresh ones."""
  from hypothesis import settings

  settings.register_profile("ci", derandomize=True)
  settings.register_profile("explore", derandomize=False)
  settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_hypothesis_profile()
