"""Test driver: trains a config in this process and dumps the final parameters.

  python tests/driver.py --config experiments/clip_shapes.py:runlocal --workdir DIR --dump out.npz
      [--set key=value ...] [--kill_after_save STEP] [--kill_in_commit STEP]

--kill_after_save STEP: SIGKILL this process once the checkpoint of STEP is committed (a preemption).
--kill_in_commit STEP: SIGKILL this process while the checkpoint of STEP is being committed: its files are written
  to orbax's temporary directory but not yet renamed into place (a crash in the middle of a save).
--kill_at PHASE:STEP (the fault-injection harness, tests/faults/): SIGKILL at one point of the run:
  train:K   right after train step K is dispatched (its result may still be computing);
  commit:K  in the middle of the commit of checkpoint K (= --kill_in_commit K);
  saved:K   after checkpoint K is committed but before its manifest is written;
  eval:K    in the middle of the evaluation at step K (computed, not yet recorded).
"""
from __future__ import annotations

import argparse
import ast
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax.train import checkpoint as ckpt_lib  # noqa: E402
from mmjax.train import loop  # noqa: E402
from mmjax.train.optim import path_str  # noqa: E402
from mmjax.train.preemption import Preempted  # noqa: E402


def set_key(config, assignment: str) -> None:
  key, value = assignment.split("=", 1)
  try:
    value = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    pass
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


def die() -> None:
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def install_kill(phase: str, k: int) -> None:
  if phase == "train":
    from mmjax.train.metrics import MetricWriter
    update = MetricWriter.update_progress

    def update_or_die(self, step, *a, **kw):
      update(self, step, *a, **kw)
      if step == k and not a and not kw:      # the per-step call, right after the step is dispatched
        die()
    MetricWriter.update_progress = update_or_die
  elif phase == "commit":
    from orbax.checkpoint._src.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize_or_die(self, *a, **kw):
      if os.path.basename(str(self.get_final())) == str(k):
        die()
      return await finalize(self, *a, **kw)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die
  elif phase == "saved":
    write = ckpt_lib.write_manifest

    def write_or_die(path, step, *a, **kw):
      if step == k:
        die()
      return write(path, step, *a, **kw)
    ckpt_lib.write_manifest = write_or_die
  elif phase == "eval":
    run = loop.eval_runner.run

    def run_then_die(config, params, **kw):
      out = run(config, params, **kw)
      if int(jax.device_get(loop_step[0])) == k:
        die()
      return out
    loop.eval_runner.run = run_then_die
    run_evals = loop.Trainer.run_evals

    def run_evals_tracking(self, params, step, *a, **kw):
      loop_step[0] = step
      return run_evals(self, params, step, *a, **kw)
    loop.Trainer.run_evals = run_evals_tracking
  else:
    raise SystemExit(f"unknown --kill_at phase {phase!r}")


loop_step = [None]


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", required=True)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--dump")
  ap.add_argument("--set", action="append", default=[])
  ap.add_argument("--kill_after_save", type=int)
  ap.add_argument("--kill_in_commit", type=int)
  ap.add_argument("--kill_at")
  ap.add_argument("--coordinator", help="host:port: run as one of --num_processes processes (gloo on CPU)")
  ap.add_argument("--num_processes", type=int, default=1)
  ap.add_argument("--process_id", type=int, default=0)
  args = ap.parse_args(argv)
  if args.coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
  if args.kill_at:
    phase, _, k = args.kill_at.partition(":")
    install_kill(phase, int(k))

  path, _, arg = args.config.partition(":")
  config = config_lib.load_experiment(path, arg or None)
  for assignment in args.set:
    set_key(config, assignment)

  if args.kill_after_save is not None:
    save = ckpt_lib.Checkpointer.save

    def save_then_die(self, step, *a, **kw):
      save(self, step, *a, **kw)
      if step == args.kill_after_save:
        self.wait()
        os.kill(os.getpid(), signal.SIGKILL)
    ckpt_lib.Checkpointer.save = save_then_die

  if args.kill_in_commit is not None:
    from orbax.checkpoint._src.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize_or_die(self, *a, **kw):
      if os.path.basename(str(self.get_final())) == str(args.kill_in_commit):
        os.kill(os.getpid(), signal.SIGKILL)
      return await finalize(self, *a, **kw)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die

  trainer = loop.Trainer(config, args.workdir)
  try:
    trainer.train()
  except Preempted as e:
    print(f"preempted at step {e.step}", flush=True)
    sys.exit(75)
  if args.dump and jax.process_index() == 0:
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(trainer.state.params))[0]
    np.savez(args.dump, **{path_str(p): np.asarray(x) for p, x in flat})
  print(f"devices={jax.device_count()} step={int(trainer.state.step)}")


def serve() -> None:
  """`driver.py --serve`: a fork server for tests that start many short jobs with the same environment (the fault
  tests' restarts). Reads one JSON request a line on stdin, {"args": [driver arguments], "log": path}; forks a
  child that runs main(args) as a fresh job (this process has imported everything but never started a JAX backend,
  so every child starts its own) with stdout and stderr to `log`; answers {"returncode": ...} as subprocess does
  (negative: killed by that signal). Saves each job the ~4 s of imports."""
  import json
  import traceback
  from jax._src import xla_bridge
  assert not xla_bridge._backends, "the fork server must not start a JAX backend before forking"
  for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:                                        # the job
      code = 1
      try:
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdin = open(os.devnull)
        main(request["args"])
        code = 0
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      except BaseException:                             # noqa: B036 (reported in the log, exit 1)
        traceback.print_exc()
      finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"returncode": rc}), flush=True)


if __name__ == "__main__":
  if sys.argv[1:] == ["--serve"]:
    serve()
  else:
    main()
