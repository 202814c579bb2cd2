"""mmjax entry point.

  python -m mmjax.main --config experiments/clip_shapes.py --workdir runs/clip_shapes [--config.key=value]
  python -m mmjax.main --config experiments/clip_shapes.py --workdir runs/clip_shapes --mode eval [--best]
  mmjax --config ...            (the same, as a console script)

A run resumes from the latest checkpoint in --workdir. Multi-host: pass --coordinator_address host:port,
--num_processes and --process_id (or set them in the environment JAX reads on TPU VMs / SLURM with
--distributed=auto). Errors a user can fix print one line, `mmjax: error: ...`, and exit with status 2.
SIGTERM/SIGINT (preemption, Ctrl-C) stop training at the next step with a checkpoint and exit with status 75
(EX_TEMPFAIL: requeue and rerun the same command to resume); a second signal exits at once with status 130.
On Linux the process first re-executes itself with tcmalloc or jemalloc preloaded when one is installed
(mmjax.allocator: XLA's CPU runtime is faster with a caching malloc, measured in benchmarks/README.md);
MMJAX_ALLOCATOR=system opts out.
"""
from __future__ import annotations

import difflib
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mmjax.allocator import reexec_with_allocator
from mmjax.errors import MmjaxError
from mmjax.train.preemption import EXIT_PREEMPTED, Preempted, PreemptionGuard

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "verify"],
                          "train (resumes automatically), eval (the latest checkpoint) or verify (check every "
                          "checkpoint of --workdir against its manifest; needs no --config).")
_BEST = flags.DEFINE_bool("best", False, "With --mode eval: the checkpoint that config.select_best kept "
                          "(workdir/best.json) instead of the latest.")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "off", ["off", "auto", "explicit"],
                                 "off: one process; auto: jax.distributed.initialize() from the environment "
                                 "(TPU VM, SLURM); explicit: from the three flags below.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (explicit).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id (explicit).")


def _fail(message: str) -> None:
  print(f"mmjax: error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors for unknown keys and bad config files."""
  try:
    rest = flags.FLAGS(argv)
    config = _CONFIG.value
    if _MODE.value == "verify" and not flags.FLAGS["config"].present:
      return rest
    if config is None or type(config).__name__ == "_ErrorConfig":
      path = flags.FLAGS["config"].config_filename if flags.FLAGS["config"].present else None
      _fail(f"cannot load config file {path!r}; pass --config experiments/<name>.py" if path else
            "--config is required, e.g. --config experiments/clip_shapes.py")
    return rest
  except flags.Error as e:
    cause = e.__cause__ or e.__context__
    if isinstance(cause, (AttributeError, KeyError)):
      _fail(_unknown_key_message(argv, cause))
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:
    _fail(_unknown_key_message(argv, e))
  return []


def _unknown_key_message(argv: list[str], err: BaseException) -> str:
  from mmjax.config import base_config
  keys = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
  known = _flatten(base_config())
  from mmjax.rl.config import rl_config          # RL configs (trainer = "ppo") have their own keys
  known += [k for k in _flatten(rl_config()) if k not in known]
  for key in keys:
    if key not in known:
      moved = _moved_evaluator_setting(key)
      if moved:
        return moved
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"; did you mean --config.{close[0]}?" if close else ""
      return f"unknown config key {key!r} in --config.{key}{hint}"
  return f"bad config override ({type(err).__name__}: {err})"


def _moved_evaluator_setting(key: str) -> str:
  """For a flat `evals.<setting>` of an evaluator: where it is given now (evals.<evaluator>.<setting>)."""
  if not key.startswith("evals.") or key.count(".") != 1:
    return ""
  from mmjax.evals.base import moved_key_hint
  return moved_key_hint(key[len("evals."):])


def _flatten(cfg, prefix: str = "") -> list[str]:
  out = []
  for k, v in cfg.items():
    if hasattr(v, "items"):
      out += _flatten(v, f"{prefix}{k}.")
    out.append(f"{prefix}{k}")
  return out


def _distributed() -> None:
  import jax
  if _DISTRIBUTED.value != "off":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU hosts (tests); no effect on GPU/TPU
  if _DISTRIBUTED.value == "auto":
    jax.distributed.initialize()
  elif _DISTRIBUTED.value == "explicit":
    if None in (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
      raise MmjaxError("--distributed=explicit needs --coordinator_address, --num_processes and --process_id")
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)


def verify(workdir: str) -> int:
  """Checks every checkpoint of `workdir`; prints one line each; 0 if the newest is intact, else 1."""
  import os
  from mmjax.train import checkpoint as ckpt_lib
  root = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(root):
    _fail(f"no checkpoints in {workdir} ({root} does not exist)")
  names = sorted(os.listdir(root), key=lambda n: (not n.split(".")[0].isdigit(), int(n.split(".")[0]) if
                                                   n.split(".")[0].isdigit() else 0, n))
  newest_ok = None
  for name in names:
    path = os.path.join(root, name)
    if not os.path.isdir(path):
      continue
    if not name.isdigit():
      print(f"{path}: incomplete save (ignored on resume; removed by the next save)")
      continue
    problems = ckpt_lib.verify_dir(path)
    status = "ok" if not problems else ("unverified: " + problems[0] if problems[0].endswith("commit)")
                                          else f"DAMAGED: {problems[0]}" + (f" (+{len(problems) - 1} more)"
                                                                              if len(problems) > 1 else ""))
    print(f"{path}: {status}")
    newest_ok = not problems or status.startswith("unverified")
  if newest_ok is None:
    _fail(f"no committed checkpoint in {root}")
  return 0 if newest_ok else 1


def main(argv: list[str]) -> None:
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)  # keep the console to the progress bar and results
  if not _WORKDIR.value:
    _fail("--workdir is required, e.g. --workdir runs/clip_shapes")
  if _MODE.value == "verify":
    sys.exit(verify(_WORKDIR.value))
  try:
    _distributed()
    from mmjax.trainers import make_trainer        # the supervised loop, or mmjax.rl's PPO for trainer="ppo"
    with PreemptionGuard() as guard:     # a signal during start-up (data, tokenizer, restore) stops cleanly too
      trainer = make_trainer(_CONFIG.value, _WORKDIR.value)
      if guard.requested:
        raise Preempted(f"stopped by {guard.signal_name} during start-up, before any training step; nothing "
                        f"new to save; rerun the same command to start", step=trainer.start_step,
                        signal_name=guard.signal_name or "SIGTERM")
      if _MODE.value == "train":
        trainer.train(guard)
      else:
        trainer.evaluate(best=_BEST.value)
  except Preempted as e:
    print(f"mmjax: {e}", file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except MmjaxError as e:
    _fail(str(e))


def run() -> None:
  """Console-script entry point (`mmjax`). Re-executes itself once with a caching malloc (mmjax.allocator;
  MMJAX_ALLOCATOR=system keeps glibc's) before JAX starts."""
  try:
    reexec_with_allocator()
  except MmjaxError as e:
    _fail(str(e))
  app.run(main, flags_parser=_parse)


if __name__ == "__main__":
  run()
