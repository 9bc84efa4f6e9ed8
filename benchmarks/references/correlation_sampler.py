"""The compiled `spatial_correlation_sampler` (ClementPinard/Pytorch-Correlation-extension 0.5.0) that
the official MAST imports, built for the installed CPU torch, so that MAST's step and propagation are timed
with the op the official code runs (benchmarks/references/mast.py).

The PyPI sdist does not build as released against a CPU-only torch: its setup.py always asks for a CUDA
extension, and `correlation_sampler.cpp` includes `<c10/cuda/CUDAGuard.h>` unconditionally (the CPU wheel
lacks `cuda_cmake_macros.h`, which that header needs). So: fetch the sdist (or use a given tarball or
checkout), copy it to a cache folder, guard those includes with `#ifdef USE_CUDA`, and run the repository's
CPU build (`setup_cpu.py build_ext --inplace`, whose two lines are run here: the sdist leaves the file out).
Nothing of theirs is committed here. ~1 min on 2 cores, once per torch version.

  python benchmarks/references/correlation_sampler.py                       # prints the folder to import from
  python benchmarks/references/correlation_sampler.py --source=/path/to/Pytorch-Correlation-extension
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

NAME, VERSION = "spatial-correlation-sampler", "0.5.0"
SDIST = "spatial_correlation_sampler-0.5.0.tar.gz"
SDIST_SHA256 = "872d720d3740f3caf0d15620af5180af8a1971568f9c7cda3664757262688d11"
CUDA_INCLUDE = "#include <c10/cuda/CUDAGuard.h>"
# setup_cpu.py of the repository: not in the sdist.
SETUP_CPU = "import setup; setup.CPU_ONLY = True; setup.launch_setup()"


def default_cache() -> str:
  import torch

  root = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
  return os.path.join(root, "jaxseg", f"{SDIST[: -len('.tar.gz')]}-torch{torch.__version__}")


def download_sdist(folder: str) -> str:
  """The 0.5.0 sdist from PyPI, checked against its sha256. `pip download --no-binary :all:` cannot be
  used: pip prepares the sdist's metadata, which runs setup.py, which fails without CUDA. The file comes
  from the index pip reads (PyPI's simple API)."""
  path = os.path.join(folder, SDIST)
  if not os.path.exists(path):
    index = urllib.request.Request(
        f"https://pypi.org/simple/{NAME}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(index, timeout=60) as response:
      files = {f["filename"]: f for f in json.load(response)["files"]}
    with urllib.request.urlopen(files[SDIST]["url"], timeout=120) as response:
      data = response.read()
    with open(path + ".tmp", "wb") as f:
      f.write(data)
    os.replace(path + ".tmp", path)
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  if digest != SDIST_SHA256:
    raise RuntimeError(f"{path}: sha256 {digest}, expected {SDIST_SHA256}")
  return path


def guard_cuda_includes(source_dir: str) -> list[str]:
  """Wraps every `#include <c10/cuda/CUDAGuard.h>` of the C++ sources in `#ifdef USE_CUDA` (setup.py
  defines USE_CUDA for CUDA builds only); returns the files changed."""
  changed = []
  for path in sorted(glob.glob(os.path.join(source_dir, "Correlation_Module", "*.cpp"))):
    with open(path) as f:
      lines = f.read().split("\n")
    out, edited = [], False
    for i, line in enumerate(lines):
      guarded = 0 < i < len(lines) - 1 and lines[i - 1].strip() == "#ifdef USE_CUDA"
      if line.strip() == CUDA_INCLUDE and not guarded:
        out += ["#ifdef USE_CUDA", line, "#endif"]
        edited = True
      else:
        out.append(line)
    if edited:
      with open(path, "w") as f:
        f.write("\n".join(out))
      changed.append(os.path.basename(path))
  return changed


def _unpack(source: str, into: str) -> str:
  """A fresh copy of the sources (sdist tarball or checkout) under `into`; returns its root."""
  if os.path.isdir(source):
    root = os.path.join(into, "src")
    shutil.copytree(source, root, ignore=shutil.ignore_patterns(".git", "build", "*.so"))
    return root
  with tarfile.open(source) as tar:
    tar.extractall(os.path.join(into, "sdist"), filter="data")
  (root,) = glob.glob(os.path.join(into, "sdist", "*"))
  return root


def build(source: str = "", cache: str = "") -> str:
  """The folder to put on sys.path for `import spatial_correlation_sampler` (the compiled CPU build);
  builds it on first use. `source`: the sdist tarball or a checkout of the repository; default: the
  sdist from PyPI."""
  cache = cache or default_cache()
  module_dir = os.path.join(cache, "Correlation_Module")
  if glob.glob(os.path.join(module_dir, "spatial_correlation_sampler_backend*.so")):
    return module_dir
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=os.path.dirname(cache)) as work:
    root = _unpack(source or download_sdist(work), work)
    print(
        f"building {NAME} {VERSION} (CPU) from {source or 'PyPI'}: patched {guard_cuda_includes(root)}"
    )
    subprocess.run(
        [sys.executable, "-c", SETUP_CPU, "build_ext", "--inplace"],
        cwd=root,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(os.path.join(root, "build"), ignore_errors=True)
    if os.path.exists(cache):
      shutil.rmtree(cache)
    shutil.move(root, cache)
  return module_dir


def load(module_dir: str):
  """Imports the compiled module from `module_dir` (its backend must load against this torch)."""
  import torch  # noqa: F401  (the backend links against libtorch)

  sys.path.insert(0, module_dir)
  module = importlib.import_module("spatial_correlation_sampler")
  importlib.import_module("spatial_correlation_sampler_backend")
  return module


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--source", default="", help="sdist tarball or checkout (default: PyPI)")
  parser.add_argument("--cache", default="", help="build folder (default: ~/.cache/jaxseg/...)")
  args = parser.parse_args(argv)
  module_dir = build(args.source, args.cache)
  load(module_dir)
  print(module_dir)
  return module_dir


if __name__ == "__main__":
  main()
