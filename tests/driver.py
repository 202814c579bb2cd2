"""Test driver: trains a config in this process and dumps the final parameters.

  python tests/driver.py --config experiments/clip_shapes.py:runlocal --workdir DIR --dump out.npz
      [--set key=value ...] [--kill_after_save STEP] [--kill_in_commit STEP]

--kill_after_save STEP: SIGKILL this process once the checkpoint of STEP is committed (a preemption).
--kill_in_commit STEP: SIGKILL this process while the checkpoint of STEP is being committed: its files are written
  to orbax's temporary directory but not yet renamed into place (a crash in the middle of a save).
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


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", required=True)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--dump")
  ap.add_argument("--set", action="append", default=[])
  ap.add_argument("--kill_after_save", type=int)
  ap.add_argument("--kill_in_commit", type=int)
  args = ap.parse_args()

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
  trainer.train()
  if args.dump:
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(trainer.state.params))[0]
    np.savez(args.dump, **{path_str(p): np.asarray(x) for p, x in flat})
  print(f"devices={jax.device_count()} step={int(trainer.state.step)}")


if __name__ == "__main__":
  main()
