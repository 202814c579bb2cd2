"""A caching malloc for the process (tcmalloc or jemalloc), chosen before JAX starts.

Why: XLA's CPU runtime allocates each executable's temporary buffer afresh on every call (841 MiB for the
open_clip anchor's CLIP train step). glibc serves blocks over 32 MiB with mmap and returns them with munmap, so
every step page-faults the whole buffer in again and the kernel zeroes it: on a 2-core VM, 220,000 minor faults
and 0.43 s of system time per 1.2 s step. tcmalloc and jemalloc keep freed blocks mapped, and the faults go
(benchmarks/README.md has the measurements). Torch's CPU training does not show this (measured: the anchor is as
fast with tcmalloc as without).

A malloc can only be replaced before the process starts, so `reexec_with_allocator()` re-executes the current
command line once (same PID, same arguments) with LD_PRELOAD set, when JAX will run on the CPU (on a GPU/TPU the
host malloc does not serve XLA's buffers). It is called by `mmjax.main` and the benchmarks before anything heavy
is imported.

MMJAX_ALLOCATOR: "auto" (default: tcmalloc, else jemalloc, if one is installed, e.g. Debian/Ubuntu
`apt-get install libtcmalloc-minimal4`), "tcmalloc", "jemalloc", a path to a shared library, or "system"
(keep glibc malloc; no re-exec).
"""
from __future__ import annotations

import glob
import os
import sys

from mmjax.errors import MmjaxError

ENV = "MMJAX_ALLOCATOR"
ACTIVE_ENV = "MMJAX_ALLOCATOR_ACTIVE"      # set in the re-executed process: the library it preloads
NAMES = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
}
# jemalloc serves blocks above `oversize_threshold` (8 MiB) from an arena that is purged at once, which
# brings the page faults back; 0 turns that arena off, and freed pages are kept for 10 s.
JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:10000,muzzy_decay_ms:10000"


def library_dirs() -> list[str]:
  """Where shared libraries are looked for: the active environment's lib, then the system's."""
  dirs = [os.path.join(sys.prefix, "lib")]
  if os.environ.get("CONDA_PREFIX"):
    dirs.append(os.path.join(os.environ["CONDA_PREFIX"], "lib"))
  dirs += sorted(glob.glob("/usr/lib/*-linux-gnu")) + ["/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib64"]
  return dirs


def find_allocator(choice: str | None = None, dirs: list[str] | None = None) -> tuple[str, str] | None:
  """-> (kind, path) of the library to preload for `choice` (default $MMJAX_ALLOCATOR or "auto"), or None.

  None for "system", and for "auto" when neither tcmalloc nor jemalloc is installed. Raises MmjaxError for an
  unknown choice, a named allocator that is not installed, or a path that does not exist.
  """
  choice = (choice if choice is not None else os.environ.get(ENV, "auto")).strip() or "auto"
  if choice == "system":
    return None
  if "/" in choice:
    if not os.path.isfile(choice):
      raise MmjaxError(f"{ENV}={choice!r}: no such file; give a path to libtcmalloc/libjemalloc, or "
                       f"{ENV}=system to keep the system malloc")
    return ("jemalloc" if "jemalloc" in os.path.basename(choice) else "tcmalloc"), choice
  if choice not in ("auto", *NAMES):
    raise MmjaxError(f"{ENV}={choice!r} is not one of auto, tcmalloc, jemalloc, system or a library path")
  dirs = library_dirs() if dirs is None else dirs
  for kind in (NAMES if choice == "auto" else (choice,)):
    for name in NAMES[kind]:
      for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path):
          return kind, path
  if choice == "auto":
    return None
  raise MmjaxError(f"{ENV}={choice}: {NAMES[choice][0]} not found in {', '.join(dirs)} (Debian/Ubuntu: "
                   f"apt-get install {'libtcmalloc-minimal4' if choice == 'tcmalloc' else 'libjemalloc2'})")


def preload_env(kind: str, path: str, env: dict[str, str]) -> dict[str, str]:
  """A copy of `env` that preloads `path` (kept first in LD_PRELOAD) and marks the allocator active."""
  env = dict(env)
  env["LD_PRELOAD"] = ":".join([path] + [p for p in env.get("LD_PRELOAD", "").split(":") if p and p != path])
  env[ACTIVE_ENV] = path
  if kind == "jemalloc":
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
  else:  # gperftools prints a line for every allocation over 1 GiB unless told otherwise
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 62))
  return env


def active_allocator() -> str:
  """The preloaded library of this process (from the re-exec, or an LD_PRELOAD the user set), or "system"."""
  if os.environ.get(ACTIVE_ENV):
    return os.environ[ACTIVE_ENV]
  for p in os.environ.get("LD_PRELOAD", "").split(":"):
    if "tcmalloc" in p or "jemalloc" in p:
      return p
  return "system"


def jax_targets_cpu(env: dict[str, str] | None = None) -> bool:
  """Whether JAX will run on the CPU, decided without importing it: the first platform of $JAX_PLATFORMS if set,
  else False when an accelerator plugin is installed (jax_cuda*/jax_rocm* plugin, libtpu) and its device is
  present (/dev/nvidia<N>, /dev/kfd, /dev/accel*, /dev/vfio/<N>), else True."""
  env = os.environ if env is None else env
  platforms = (env.get("JAX_PLATFORMS") or env.get("JAX_PLATFORM_NAME") or "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  import pkgutil
  plugin = any(m.name == "libtpu" or m.name.startswith(("jax_cuda", "jax_rocm")) for m in pkgutil.iter_modules())
  device = any(glob.glob(p) for p in ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/accel*", "/dev/vfio/[0-9]*"))
  return not (plugin and device)


def reexec_with_allocator(choice: str | None = None) -> None:
  """Re-executes this process's command line with a caching malloc preloaded, once; returns if there is
  nothing to do (allocator already active or preloaded, "system", none installed, not Linux, or JAX will run on
  an accelerator: the page faults it avoids are those of XLA's CPU runtime, `jax_targets_cpu`)."""
  if not sys.platform.startswith("linux") or active_allocator() != "system" or not jax_targets_cpu():
    return
  found = find_allocator(choice)
  if found is None:
    return
  argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *argv[1:]], preload_env(*found, os.environ))
