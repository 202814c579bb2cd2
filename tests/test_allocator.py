"""mmjax.allocator: which malloc is found, the environment of the re-exec, and a real re-exec."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mmjax import allocator
from mmjax.errors import MmjaxError


def _lib(d, name):
  path = d / name
  path.write_bytes(b"")
  return str(path)


def test_auto_prefers_tcmalloc_then_jemalloc_then_none(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  a.mkdir(), b.mkdir()
  assert allocator.find_allocator("auto", [str(a), str(b)]) is None
  je = _lib(b, "libjemalloc.so.2")
  assert allocator.find_allocator("auto", [str(a), str(b)]) == ("jemalloc", je)
  tc = _lib(b, "libtcmalloc_minimal.so.4")
  assert allocator.find_allocator("auto", [str(a), str(b)]) == ("tcmalloc", tc)
  assert allocator.find_allocator("jemalloc", [str(a), str(b)]) == ("jemalloc", je)
  assert allocator.find_allocator("system", [str(a), str(b)]) is None


def test_bad_choices_name_the_problem(tmp_path):
  with pytest.raises(MmjaxError, match="MMJAX_ALLOCATOR='mimalloc' is not one of"):
    allocator.find_allocator("mimalloc", [str(tmp_path)])
  with pytest.raises(MmjaxError, match=r"libtcmalloc_minimal.so.4 not found in .*apt-get install libtcmalloc"):
    allocator.find_allocator("tcmalloc", [str(tmp_path)])
  with pytest.raises(MmjaxError, match="no such file"):
    allocator.find_allocator(str(tmp_path / "libnothere.so"), [])
  path = _lib(tmp_path, "libjemalloc.so.2")
  assert allocator.find_allocator(path, []) == ("jemalloc", path)


def test_preload_env_keeps_other_preloads_and_sets_jemalloc_conf():
  env = allocator.preload_env("jemalloc", "/x/libjemalloc.so.2", {"LD_PRELOAD": "/y/liba.so:/x/libjemalloc.so.2"})
  assert env["LD_PRELOAD"] == "/x/libjemalloc.so.2:/y/liba.so"
  assert env[allocator.ACTIVE_ENV] == "/x/libjemalloc.so.2"
  assert env["MALLOC_CONF"] == allocator.JEMALLOC_CONF
  env = allocator.preload_env("tcmalloc", "/x/libtcmalloc.so.4", {"MALLOC_CONF": "keep"})
  assert env["LD_PRELOAD"] == "/x/libtcmalloc.so.4" and env["MALLOC_CONF"] == "keep"


_PROBE = """
import os, sys
from mmjax.allocator import reexec_with_allocator
reexec_with_allocator()
maps = open("/proc/self/maps").read()
print(os.environ.get("MMJAX_ALLOCATOR_ACTIVE", "-"), any(k in maps for k in ("tcmalloc", "jemalloc")), sys.argv[1:])
"""


def test_reexec_preloads_an_installed_allocator_once(tmp_path):
  found = allocator.find_allocator("auto")
  if found is None:
    pytest.skip("no tcmalloc/jemalloc installed here (e.g. apt-get install libtcmalloc-minimal4)")
  probe = tmp_path / "probe.py"
  probe.write_text(_PROBE)
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ACTIVE_ENV, allocator.ENV)}
  out = subprocess.run([sys.executable, str(probe), "--flag", "x y"], env=env, capture_output=True, text=True,
                       check=True, timeout=120).stdout.split()
  assert out[0] == found[1] and out[1] == "True" and " ".join(out[2:]) == "['--flag', 'x y']"
  env[allocator.ENV] = "system"
  out = subprocess.run([sys.executable, str(probe)], env=env, capture_output=True, text=True, check=True,
                       timeout=120).stdout.split()
  assert out[:2] == ["-", "False"]


def test_jax_target_is_read_from_jax_platforms_before_jax_starts():
  assert allocator.jax_targets_cpu({"JAX_PLATFORMS": "cpu"})
  assert not allocator.jax_targets_cpu({"JAX_PLATFORMS": "cuda,cpu"})      # JAX tries them in order
  assert not allocator.jax_targets_cpu({"JAX_PLATFORMS": "tpu"})
  # Without $JAX_PLATFORMS: an accelerator only when both its plugin and its device are there.
  import pkgutil
  from types import SimpleNamespace
  for plugins, devices, want in (([], [], True), (["jax_cuda12_plugin"], [], True), ([], ["/dev/nvidia0"], True),
                                 (["jax_cuda12_plugin"], ["/dev/nvidia0"], False), (["libtpu"], ["/dev/accel0"], False)):
    mods = [SimpleNamespace(name=n) for n in ["numpy", *plugins]]
    with pytest.MonkeyPatch.context() as m:
      m.setattr(pkgutil, "iter_modules", lambda: iter(mods))
      m.setattr(allocator.glob, "glob", lambda pat: [d for d in devices if d.startswith(pat.split("*")[0]
                                                                                        .split("[")[0])])
      assert allocator.jax_targets_cpu({}) == want, (plugins, devices)


def test_no_reexec_when_jax_runs_on_an_accelerator(monkeypatch):
  calls = []
  monkeypatch.setattr(allocator.os, "execve", lambda *a: calls.append(a))
  monkeypatch.delenv(allocator.ACTIVE_ENV, raising=False)
  monkeypatch.delenv("LD_PRELOAD", raising=False)
  monkeypatch.setattr(allocator, "find_allocator", lambda choice=None: ("tcmalloc", "/usr/lib/libtcmalloc.so.4"))
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  allocator.reexec_with_allocator()
  assert calls == []
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  allocator.reexec_with_allocator()
  assert len(calls) == 1 and calls[0][2]["LD_PRELOAD"].startswith("/usr/lib/libtcmalloc.so.4")
