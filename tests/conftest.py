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

# Longest test files first (seconds of work per file in a CI run, from `--junitxml`; the sum is ~2100 s),
# handed out by `_LongestFileFirst` below: each of the two workers takes the next file when it is free,
# so the run ends with short files on both workers instead of a long one running alone. Files not listed
# (each under ~12 s) keep their order after these.
LONGEST_FIRST = (
    "test_seam_seeds.py",  # 313
    "test_vos_method.py",  # 290
    "test_uda_method.py",  # 250
    "test_launch.py",  # 236
    "test_hn_method.py",  # 157
    "test_conv_lowering.py",  # 82
    "test_uda_trajectory.py",  # 79
    "test_trainer_extensions.py",  # 75
    "test_reliability.py",  # 72
    "test_gpu_runbook.py",  # 55 (the dry run of vos, ~40 s idle)
    "test_seam_trajectory.py",  # 59
    "test_benchmarks.py",  # ~31 (59 less its vos train step, now the slow tier's)
    "test_trainer.py",  # 54
    "test_cam.py",  # 42
    "test_resnet.py",  # 40
    "test_deeplab_v2.py",  # 36
    "test_cam_parity.py",  # 24
    "test_seam_model.py",  # 22
    "test_resnet38.py",  # 22
    "test_depth_geometry.py",  # 21
    "test_correspondence.py",  # 21
    "test_seam_losses.py",  # 19
    "test_seam_method.py",  # 18
    "test_uda_parts.py",  # 18
    "test_affinity.py",  # 16
    "test_bad_inputs.py",  # 15
    "test_predict.py",  # 13
)


def pytest_collection_modifyitems(config, items):
  """Files in LONGEST_FIRST order; inside a file, its `slow` (CI-tier, minutes) tests first, so that
  the test a worker holds back while it waits for its next file is a short one (see below)."""
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(
      key=lambda item: (
          rank.get(item.path.name, len(rank)),
          item.get_closest_marker("slow") is None,
      )
  )


def pytest_xdist_make_scheduler(config, log):
  """`--dist loadfile` in the collection's order (LONGEST_FIRST), a file at a time.

  xdist's own loadfile scheduler re-sorts files by their number of tests (`--loadscope-reorder`), which
  put the 4-test SEAM seed file (~5 min) last, alone on one worker, and it hands a worker its next file
  while two of its tests are still to run. A worker must know its next test before it runs one (for
  teardown), so the next file goes out when only the last test of the current one is left."""
  from xdist.scheduler import LoadFileScheduling

  class _LongestFileFirst(LoadFileScheduling):

    def _reschedule(self, node):
      if node.shutting_down:
        return
      if not self.workqueue:
        node.shutdown()
        return
      if self._pending_of(self.assigned_work[node]) > 1:
        return
      self._assign_work_unit(node)

  if config.getvalue("dist") != "loadfile":
    return None
  config.option.loadscopereorder = False
  return _LongestFileFirst(config, log)


def _hypothesis_profile() -> None:
  """Property tests draw the same examples on every run (derandomized), so CI is not a lottery and a
  failure reproduces; `HYPOTHESIS_PROFILE=explore` draws fresh ones."""
  from hypothesis import settings

  settings.register_profile("ci", derandomize=True)
  settings.register_profile("explore", derandomize=False)
  settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_hypothesis_profile()
