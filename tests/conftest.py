"""Shared test helpers. Tests run on the CPU; multi-device tests run `tests/driver.py` in a subprocess."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "driver.py")

# XLA's CPU backend (LLVM) optimisation level for the whole test session, set in pytest_configure for this process,
# the xdist workers and every subprocess (xla_flags below). Most of the suite's time is compiling many small
# programs that then run a few steps, and level 0 compiles them ~2x faster (a config run: 120 -> 72 s). It changes
# LLVM's code generation only, not the HLO program: sharding, fusion and every value the tests compare are XLA's
# own passes, run as usual. The session also emits fused computations with XLA's older elemental IR emitters
# instead of its MLIR fusion emitters (--xla_cpu_use_fusion_emitters=false): the same fusions, generated ~2x faster
# (a clip_shapes runlocal compile 8.6 -> 4.2 s, the suite's CPU time -28 %); float sums may round differently, as
# they do between CPUs, so tolerances scale with the largest entry. MMJAX_TEST_XLA_OPT=default runs the suite with
# XLA's defaults (level 3, fusion emitters), as users' runs are.
TEST_XLA_OPT = os.environ.get("MMJAX_TEST_XLA_OPT", "0")
TEST_XLA_FLAGS = ("" if TEST_XLA_OPT == "default" else
                  f"--xla_backend_optimization_level={int(TEST_XLA_OPT)} --xla_cpu_use_fusion_emitters=false")


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a test subprocess: this process's own flags, with the simulated CPU device count replaced by
  `devices` (None: kept as it is) and the optimisation level by the session's (TEST_XLA_FLAGS)."""
  own = [f for f in os.environ.get("XLA_FLAGS", "").split()
         if not (devices is not None and f.startswith("--xla_force_host_platform_device_count="))
         and not f.startswith(("--xla_backend_optimization_level=", "--xla_cpu_use_fusion_emitters="))]
  if devices is not None:
    own.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(own + ([TEST_XLA_FLAGS] if TEST_XLA_FLAGS else []))


def subprocess_env(devices: int, **extra: str) -> dict[str, str]:
  """The environment of a test's JAX subprocess: this one's, on the CPU with `devices` simulated devices and the
  session's XLA flags (xla_flags), the repository importable, plus `extra`."""
  return dict(os.environ, XLA_FLAGS=xla_flags(devices), JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **extra)


def run_driver(*args: str, devices: int = 1, check: bool = True, env: dict | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
  """Runs tests/driver.py in a fresh process with `devices` simulated CPU devices."""
  full_env = subprocess_env(devices, **(env or {}))
  proc = subprocess.run([sys.executable, DRIVER, *args], env=full_env, capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT)
  if proc.returncode == -6 and "Termination timeout" in proc.stderr and "rendezvous" in proc.stderr:
    # XLA's CPU collectives abort when a simulated device's thread is starved for 40 s (seen only while other
    # test processes saturate the 2 cores). That is the host, not the code under test: run it once more.
    print(f"driver {args}: XLA CPU rendezvous timeout under load; retrying once", file=sys.stderr)
    proc = subprocess.run([sys.executable, DRIVER, *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
  if check and proc.returncode != 0:
    raise AssertionError(f"driver {args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


class DriverServer:
  """`tests/driver.py --serve` in one process with `devices` simulated CPU devices: `run(*args)` is run_driver's
  job as a forked child (a fresh process that has not run anything, minus the imports). For tests that start
  many short jobs with one environment. Use as a context manager."""

  def __init__(self, log_dir: str, devices: int = 1, env: dict | None = None):
    full_env = subprocess_env(devices, **(env or {}))
    self.log_dir, self.count = log_dir, 0
    self.proc = subprocess.Popen([sys.executable, DRIVER, "--serve"], env=full_env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

  def run(self, *args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    import select
    self.count += 1
    log = os.path.join(self.log_dir, f"driver_job_{self.count}.log")
    self.proc.stdin.write(json.dumps({"args": list(args), "log": log}) + "\n")
    self.proc.stdin.flush()
    reply = None
    while reply is None:
      if not select.select([self.proc.stdout], [], [], timeout)[0]:
        raise AssertionError(f"driver job {args} did not finish within {timeout} s")
      line = self.proc.stdout.readline()
      if not line:
        raise AssertionError(f"the driver server died (exit {self.proc.wait()}):\n{self.proc.stderr.read()[-5000:]}")
      if line.startswith('{"returncode"'):
        reply = json.loads(line)
    with open(log) as f:
      output = f.read()
    proc = subprocess.CompletedProcess(args, reply["returncode"], stdout=output, stderr=output)
    if check and proc.returncode != 0:
      raise AssertionError(f"driver job {args} exited {proc.returncode}:\n{output[-5000:]}")
    return proc

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.proc.stdin.close()
    try:
      self.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()


CLIP_RUNLOCAL = "experiments/clip_shapes.py:runlocal"
# Three steps of the demo model at batch 16, no checkpoint and no evaluation: the run every "same result on 1 and on 8
# devices" test compares against.
SHORT_CLIP_RUN = ("--set", "total_steps=3", "--set", "batch_size=16", "--set", "checkpoint_every=100",
                  "--set", "evals.names=''")


def one_device_clip_run(tmp_path_factory) -> str:
  """Workdir of the 1-device SHORT_CLIP_RUN (its parameters in params.npz there), made once per test session and
  shared by the xdist workers (a lock file: the first worker to ask trains, the others wait and reuse it)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent                                  # the session's directory, common to all workers
  workdir = os.path.join(str(base), "one_device_clip_run")
  with open(os.path.join(str(base), "one_device_clip_run.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(workdir, "params.npz")):
      run_driver("--config", CLIP_RUNLOCAL, "--workdir", workdir, "--dump", os.path.join(workdir, "params.tmp.npz"),
                 *SHORT_CLIP_RUN)
      os.replace(os.path.join(workdir, "params.tmp.npz"), os.path.join(workdir, "params.npz"))
  return workdir


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def clip_config_path():
  return os.path.join(ROOT, "experiments", "clip_shapes.py")


# Rough seconds of the slowest tests on 2 quiet cores (`--durations` of a fresh-clone run, 2026-12-03, Intel Xeon;
# setup + call), by node id prefix; only for the order
# below, so a stale or missing entry costs balance, never correctness. Unlisted tests count 1 s.
SLOW_TESTS = {
    "tests/test_text_to_image.py::test_judge_learns_real_shapes": 45,
    "tests/test_vs_open_clip_data.py::test_open_clip_side_tiny": 45,
    "tests/test_train_loop.py::test_one_vs_eight_devices": 41,
    "tests/faults/test_random_kills.py::test_ten_random_kills": 38,
    "tests/test_multihost.py::test_two_processes": 29,
    "tests/faults/test_random_kills.py::test_three_random_kills": 25,
    "tests/test_multihost.py::test_sigterm_to_one_process": 25,
    "tests/test_scale.py::test_bf16_training_tracks_float32": 25,
    "tests/test_m3ae.py::test_one_vs_eight_devices": 24,
    "tests/test_preemption.py::test_sigterm_saves_checkpoint": 23,
    "tests/test_contrastive_sharded.py::test_registered_objectives_match_naive": 21,
    "tests/test_eval_compiles.py::test_eval_numbers_match_a_fresh_unbatched_reference": 21,
    "tests/test_best_checkpoint.py::test_": 19,
    "tests/test_contrastive_sharded.py::test_sharded_losses_match_naive": 16,
    "tests/test_builders.py::test_avmnist_real_full_sizes_and_classes": 16,
    "tests/test_experiments.py::test_config_runs[t2i_shapes.py]": 14,
    "tests/test_fusion_loop.py::test_mosi_one_vs_eight_devices": 14,
    "tests/test_text_to_image.py::test_guidance_one_is_conditional_zero_is_null_and_linear": 14,
    "tests/test_eval_compiles.py::test_periodic_eval_compiles_only_in_its_first_call": 14,
    "tests/test_text_to_image.py::test_shapes_and_zero_init": 13,
    "tests/test_scale.py::test_remat_policies": 12,
    "tests/test_train_loop.py::test_kill_during_checkpoint_commit_keeps_previous": 12,
    "tests/test_train_loop.py::test_exact_resume_after_kill": 11,
    "tests/test_webdataset.py::test_sigkill_at_a_random_step_then_resume_is_bitwise_identical": 11,
    "tests/test_experiments.py::test_config_runs[m3ae_flickr8k.py]": 10,
    "tests/test_experiments.py::test_config_runs[distill_clip_shapes.py]": 10,
    "tests/test_experiments.py::test_config_runs[vqa_shapes.py]": 10,
    "tests/test_fusion.py::test_same_values_and_gradients_on_1_and_8_devices": 10,
    "tests/test_experiments.py::test_config_runs[finetune_flickr8k.py]": 10,
    "tests/test_experiments.py::test_config_runs[m3ae_shapes.py]": 9,
    "tests/test_experiments.py::test_config_runs[mvae_shapes.py]": 9,
    "tests/test_experiments.py::test_config_runs[lit_flickr8k.py]": 9,
    "tests/test_composite.py::test_accumulation_is_exact_for_clip_plus_caption": 9,
    "tests/test_preemption.py::test_sigterm_during_startup_or_compilation_stops_cleanly": 9,
    "tests/test_checkpoint_integrity.py::test_every_checkpoint_has_a_correct_manifest": 9,
    "tests/test_checkpoint_integrity.py::test_a_flipped_byte_is_found_and_restore_falls_back": 9,
    "tests/test_scale.py::test_fsdp_equals_replicated": 8,
    "tests/test_distill.py::test_clip_feature_distillation_from_an_open_clip": 8,
    "tests/test_pruned_block.py::test_clip_embeddings_and_gradients_equal_the_full_model": 8,
    "tests/test_experiments.py::test_config_runs[rl_shapes_world.py]": 7,
    "tests/test_experiments.py::test_config_runs[mae_flickr8k.py]": 7,
    "tests/test_text_to_image.py::test_unet_backbone": 7,
    "tests/test_rl_ppo.py::test_one_update_runs": 7,
    "tests/test_vs_open_clip_data.py::test_mmjax_and_decode_sides_tiny": 7,
    "tests/test_experiments.py::test_config_runs[clip_shapes.py]": 6,
    "tests/test_experiments.py::test_config_runs[mae_shapes.py]": 5,
    "tests/test_experiments.py::test_config_runs[clip_flickr8k.py]": 5,
    "tests/test_experiments.py::test_config_runs[siglip_shapes.py]": 5,
    "tests/test_experiments.py::test_config_runs[caption_flickr8k.py]": 5,
    "tests/test_experiments.py::test_config_runs[caption_shapes.py]": 4,
    "tests/test_experiments.py::test_config_runs[mctn_mosi.py]": 4,
    "tests/test_flickr8k.py::test_real_full_split_sizes": 4,
    "tests/test_experiments.py::test_config_runs[siglip_flickr8k.py]": 3,
    "tests/test_mvae.py::test_elbo_terms_recomputed": 3,
    "tests/test_experiments.py::test_config_runs[distill_avmnist.py]": 2,
}


def _estimate(nodeid: str) -> float:
  return max((s for prefix, s in SLOW_TESTS.items() if nodeid.startswith(prefix)), default=1.0)


def pytest_collection_modifyitems(config, items):
  """With `-n 2 --dist loadgroup` (the Makefile), tests spread over both workers one by one, except that the tests
  of a module using a module- or session-scoped fixture of its own (or of this conftest) stay on one worker (the
  fixture is then built once).

  Work units (a test, or such a module's group) run longest first: xdist hands them out in this order as workers
  free up, so the long ones are not left for the end with one worker idle (the order within a unit is kept)."""
  units: dict[str, list] = {}
  for item in items:
    defs = getattr(item, "_fixtureinfo", None)
    defs = defs.name2fixturedefs if defs is not None else {}
    # Only this suite's own fixtures (baseid "tests..."): pytest's session-scoped tmp_path_factory, behind every
    # tmp_path, would otherwise put whole modules (all of test_experiments' config runs) on one worker.
    if any(d and d[-1].scope in ("module", "session") and d[-1].baseid for d in defs.values()):
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    group = item.get_closest_marker("xdist_group")           # that one, or a module's own
    if group is not None:
      units.setdefault("group:" + (group.args[0] if group.args else group.kwargs.get("name", "")), []).append(item)
    else:
      units.setdefault(item.nodeid, []).append(item)
  cost = {u: sum(_estimate(i.nodeid) for i in unit) for u, unit in units.items()}
  items[:] = [i for u in sorted(units, key=lambda u: -cost[u]) for i in units[u]]


def pytest_configure(config):
  """One persistent XLA compilation cache per test session, shared by both xdist workers and every subprocess they
  start (the environment is inherited): the same train step compiled again in another process (a restarted job, the
  multi-device drivers, the fault tests) is read back instead of recompiled, and so are the many small programs of
  model initialisation and evaluation. Set before any test imports jax.

  Also the session's XLA optimisation level (TEST_XLA_FLAGS) in XLA_FLAGS, inherited the same way."""
  if hasattr(config, "workerinput"):
    return                                              # a worker inherits the controller's environment
  os.environ["XLA_FLAGS"] = xla_flags()
  if "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return                                              # a user's own wins
  global _OWN_CACHE
  _OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmjax-test-jax-cache-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")   # small ones too: 7.3 -> 4.7 s a driver run


_OWN_CACHE = None


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
