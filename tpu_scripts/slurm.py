#!/usr/bin/env python3
"""Multi-node GPU training of mmjax under SLURM: writes an sbatch script and submits it.

  python tpu_scripts/slurm.py --nodes 4 --gpus-per-node 8 --time 24:00:00 --partition gpu --account my-acct \\
      --config experiments/clip_flickr8k.py --workdir /shared/runs/clip-4x8 \\
      --extra data.data_dir=/shared/tfds batch_size=4096 [--tasks per-node|per-gpu] [--dry-run]

The job runs `srun .venv/bin/python -m mmjax.main ... --distributed=auto` on every node; jax.distributed.initialize()
reads SLURM's variables (coordinator = first node, process count/id = SLURM_NTASKS/SLURM_PROCID).

Tasks (--tasks): `per-node` (default) starts ONE process per node that drives all of the node's GPUs; `per-gpu` starts
one process per GPU. Both train the same model on the same global batch. per-node is the default because mmjax's input
pipeline, tokenizer and host-side preprocessing then run once per node instead of once per GPU (8x fewer processes,
host memory and jax start-ups), and collectives inside a node stay inside one process. Caveat handled here: under
SLURM, jax 0.10 restricts each process to GPU number SLURM_LOCALID (jax/_src/clusters/cluster.py) unless
JAX_LOCAL_DEVICE_IDS is set, so per-node exports JAX_LOCAL_DEVICE_IDS=0,...,G-1 -- without it every node would use
GPU 0 only. per-gpu relies on that default (task i of a node -> GPU i) and needs every task to see all of the node's
GPUs (--gpus-per-node, no per-task GPU binding).

Time limit and preemption: SLURM sends the batch script SIGUSR1 --grace seconds before the time limit
(--signal=B:USR1@GRACE); the script forwards SIGTERM to the training processes (scancel --signal=TERM), mmjax saves a
checkpoint and exits 75, and the script requeues the job (scontrol requeue), which resumes from that checkpoint. A run
stopped for another reason (scancel, preemption) that exits 75 is not requeued by the script: rerun the same sbatch.

--dry-run prints the commands, one per line (the script as a here-document), and runs nothing. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

PROG = "slurm.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEREDOC_END = "MMJAX_SBATCH_EOF"

# Exported in the job (JAX's GPU performance tips and NVIDIA JAX-Toolbox; each flag exists in jaxlib 0.10.2, which
# aborts on unknown XLA flags -- tests/test_tpu_scripts.py checks them against the installed jaxlib).
#   latency_hiding_scheduler: schedule collectives (gradient all-reduce, FSDP all-gather/reduce-scatter) to overlap
#     with compute instead of running back to back;
#   *_combine_threshold_bytes: merge the many small per-parameter collectives of a ViT/text transformer into buffers
#     of up to 128 MiB, so that NCCL runs a few large transfers instead of hundreds of latency-bound small ones.
XLA_FLAGS = ("--xla_gpu_enable_latency_hiding_scheduler=true "
             "--xla_gpu_all_reduce_combine_threshold_bytes=134217728 "
             "--xla_gpu_all_gather_combine_threshold_bytes=134217728 "
             "--xla_gpu_reduce_scatter_combine_threshold_bytes=134217728")
# JAX preallocates 75% of each GPU by default; 90% leaves ~8 GB of an 80 GB H100 to NCCL buffers and cuDNN/cuBLAS
# workspaces (the value NVIDIA's JAX-Toolbox recommends).
MEM_FRACTION = "0.90"


class Parser(argparse.ArgumentParser):
  """argparse with one-line errors (exit status 2) instead of usage + error."""

  def error(self, message: str) -> None:
    fail(message)


def fail(message: str, status: int = 2) -> None:
  print(f"{PROG}: error: {message}", file=sys.stderr)
  sys.exit(status)


def check(value: str, pattern: str, flag: str, what: str) -> str:
  if not re.fullmatch(pattern, value):
    fail(f"{flag} {value!r}: {what}")
  return value


def time_seconds(value: str) -> int:
  """SLURM time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> seconds."""
  m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
  if not m:
    fail(f"--time {value!r}: expected HH:MM:SS, D-HH:MM:SS or minutes, e.g. 24:00:00")
  days, a, b, c = m.groups()
  if days is not None:                        # D-H, D-H:M, D-H:M:S
    return int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
  parts = [int(x) for x in (a, b, c) if x is not None]
  if len(parts) == 3:                         # H:M:S
    return parts[0] * 3600 + parts[1] * 60 + parts[2]
  return parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)   # M or M:S


def parse_extra(items: list[str]) -> list[str]:
  out = []
  for item in items:
    item = item[len("--config."):] if item.startswith("--config.") else item
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=.*", item):
      fail(f"--extra {item!r}: expected KEY=VALUE with a config key such as batch_size or optim.lr "
           f"(it becomes --config.KEY=VALUE)")
    out.append(f"--config.{item}")
  return out


def build_parser() -> Parser:
  p = Parser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--nodes", type=int, required=True, help="number of nodes")
  p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
  p.add_argument("--tasks", choices=("per-node", "per-gpu"), default="per-node",
                 help="one process per node driving all its GPUs (default), or one per GPU")
  p.add_argument("--cpus-per-gpu", type=int, default=8, help="CPU cores per GPU for the input pipeline (default 8)")
  p.add_argument("--time", required=True, help="time limit, e.g. 24:00:00 or 2-00:00:00")
  p.add_argument("--grace", type=int, default=300, help="seconds before the time limit at which mmjax is told to "
                 "checkpoint and stop (default 300)")
  p.add_argument("--partition", default=None, help="SLURM partition")
  p.add_argument("--account", default=None, help="SLURM account to charge")
  p.add_argument("--job-name", default=None, help="job name (default mmjax-<config name>)")
  p.add_argument("--config", required=True, help="experiment file, e.g. experiments/clip_flickr8k.py")
  p.add_argument("--workdir", required=True, help="run folder on storage all nodes share (checkpoints, metrics)")
  p.add_argument("--extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                 help="config overrides, passed as --config.KEY=VALUE")
  p.add_argument("--repo-dir", default=ROOT, help="mmjax checkout on the shared file system (default: this one)")
  p.add_argument("--python", default=".venv/bin/python", help="interpreter, relative to --repo-dir or absolute")
  p.add_argument("--log-dir", default="runs/slurm", help="sbatch script and SLURM output, relative to --repo-dir")
  p.add_argument("--xla-flags", default=XLA_FLAGS, help="XLA_FLAGS for the job ('' for none)")
  p.add_argument("--env", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                 help="more variables to export, e.g. NCCL_DEBUG=WARN NCCL_SOCKET_IFNAME=ib0")
  p.add_argument("--no-requeue", dest="requeue", action="store_false",
                 help="do not requeue the job when mmjax stops at the time limit")
  p.add_argument("--dry-run", action="store_true", help="print the commands; write and submit nothing")
  return p


def validate(args) -> None:
  if args.nodes < 1:
    fail(f"--nodes {args.nodes}: expected at least 1")
  if not 1 <= args.gpus_per_node <= 16:
    fail(f"--gpus-per-node {args.gpus_per_node}: expected 1 to 16")
  if args.cpus_per_gpu < 1:
    fail(f"--cpus-per-gpu {args.cpus_per_gpu}: expected at least 1")
  limit = time_seconds(args.time)
  if limit <= 0:
    fail(f"--time {args.time!r}: expected a positive time limit")
  if not 0 < args.grace < limit:
    fail(f"--grace {args.grace}: must be positive and shorter than the time limit ({limit} s)")
  if args.grace > 65535:
    fail(f"--grace {args.grace}: SLURM's --signal takes at most 65535 seconds")
  for flag in ("partition", "account"):
    value = getattr(args, flag)
    if value is not None:
      check(value, r"[\w.-]+", f"--{flag}", "expected letters, digits, '_', '-', '.'")
  if args.job_name is not None:
    check(args.job_name, r"[\w.-]+", "--job-name", "expected letters, digits, '_', '-', '.'")
  if not os.path.isabs(args.repo_dir):
    fail(f"--repo-dir {args.repo_dir!r}: expected an absolute path on the shared file system")
  path = args.config.split(":", 1)[0]
  if os.path.isabs(path) or not path.endswith(".py"):
    fail(f"--config {args.config!r}: give an experiment file relative to the repository, e.g. "
         f"experiments/clip_shapes.py")
  if not os.path.isfile(os.path.join(args.repo_dir, path)):
    fail(f"--config {args.config!r}: {path} does not exist in {args.repo_dir}")
  if args.workdir.startswith("gs://") or "://" in args.workdir:
    fail(f"--workdir {args.workdir!r}: mmjax writes its workdir with local file I/O; use a folder on the cluster's "
         f"shared file system")
  if not os.path.isabs(args.workdir):
    fail(f"--workdir {args.workdir!r}: expected an absolute path on storage every node shares, e.g. "
         f"/shared/runs/{os.path.splitext(os.path.basename(path))[0]}")
  check(args.log_dir, r"[\w.-]+(/[\w.-]+)*|/[\w./-]+", "--log-dir", "expected a folder path")
  if args.xla_flags:
    check(args.xla_flags, r"--xla_\w+=[\w.,:/+-]*( +--xla_\w+=[\w.,:/+-]*)*", "--xla-flags",
          "expected space-separated --xla_NAME=VALUE flags")
  for item in args.env:
    check(item, r"[A-Za-z_][A-Za-z0-9_]*=.*", "--env", "expected NAME=VALUE")
  overrides = parse_extra(args.extra)
  devices = args.nodes * args.gpus_per_node
  for o in overrides:
    if o.startswith("--config.batch_size="):
      value = o.split("=", 1)[1]
      if not value.isdigit() or int(value) % devices:
        fail(f"--extra batch_size={value}: the global batch must be a multiple of the {devices} GPUs "
             f"({args.nodes} nodes x {args.gpus_per_node})")


def sbatch_script(args) -> str:
  cfg_name = os.path.splitext(os.path.basename(args.config.split(":", 1)[0]))[0]
  job = args.job_name or f"mmjax-{cfg_name}"
  g = args.gpus_per_node
  ntasks, cpus = (1, args.cpus_per_gpu * g) if args.tasks == "per-node" else (g, args.cpus_per_gpu)
  log_dir = args.log_dir if os.path.isabs(args.log_dir) else os.path.join(args.repo_dir, args.log_dir)
  run = [args.python, "-m", "mmjax.main", "--config", args.config, "--workdir", args.workdir, "--distributed=auto",
         *parse_extra(args.extra)]
  q = shlex.quote
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={job}",
      f"#SBATCH --nodes={args.nodes}",
      f"#SBATCH --ntasks-per-node={ntasks}",
      f"#SBATCH --gpus-per-node={g}",
      f"#SBATCH --cpus-per-task={cpus}",
      "#SBATCH --exclusive",
      "#SBATCH --mem=0",
      f"#SBATCH --time={args.time}",
  ]
  if args.partition:
    lines.append(f"#SBATCH --partition={args.partition}")
  if args.account:
    lines.append(f"#SBATCH --account={args.account}")
  lines += [
      f"#SBATCH --output={log_dir}/%x-%j.out",
      "#SBATCH --open-mode=append",
      f"#SBATCH --signal=B:USR1@{args.grace}",
  ]
  if args.requeue:
    lines.append("#SBATCH --requeue")
  lines += [
      f"# Written by tpu_scripts/slurm.py: {args.nodes} node(s) x {g} GPU(s), "
      + ("one process per node driving all its GPUs." if args.tasks == "per-node" else "one process per GPU."),
      "set -u",
      f"cd {q(args.repo_dir)} || exit 1",
      "",
  ]
  if args.xla_flags:
    lines.append(f'export XLA_FLAGS="{args.xla_flags}${{XLA_FLAGS:+ $XLA_FLAGS}}"   # yours (set before sbatch) come '
                 "last and win")
  lines.append(f"export XLA_PYTHON_CLIENT_MEM_FRACTION=${{XLA_PYTHON_CLIENT_MEM_FRACTION:-{MEM_FRACTION}}}")
  if args.tasks == "per-node":
    ids = ",".join(str(i) for i in range(g))
    lines.append(f"export JAX_LOCAL_DEVICE_IDS={ids}   # else jax.distributed under SLURM keeps only GPU SLURM_LOCALID")
  for item in args.env:
    name, value = item.split("=", 1)
    lines.append(f"export {name}={q(value)}")
  lines += [
      "",
      "stop_requested=0",
      "on_time_limit() {   # SIGUSR1 from SLURM --grace seconds before the time limit",
      "  stop_requested=1",
      f'  echo "mmjax-slurm: time limit in {args.grace} s: SIGTERM to the training processes (checkpoint, exit 75)"',
      '  scancel --signal=TERM "$SLURM_JOB_ID"',
      "}",
      "trap on_time_limit USR1",
      "",
      f"srun --ntasks-per-node={ntasks} --cpus-per-task={cpus} {shlex.join(run)} &",
      "srun_pid=$!",
      'while kill -0 "$srun_pid" 2>/dev/null; do wait "$srun_pid"; done   # a trapped signal interrupts wait',
      'wait "$srun_pid"; rc=$?',
  ]
  if args.requeue:
    lines += [
        'if [ "$rc" -eq 75 ] && [ "$stop_requested" -eq 1 ]; then',
        '  echo "mmjax-slurm: checkpoint saved at the time limit; requeueing job $SLURM_JOB_ID to resume"',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "fi",
    ]
  lines += [
      'echo "mmjax-slurm: exit status $rc"',
      'exit "$rc"',
  ]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
  args = build_parser().parse_args(argv)
  validate(args)
  script = sbatch_script(args)
  log_dir = args.log_dir if os.path.isabs(args.log_dir) else os.path.join(args.repo_dir, args.log_dir)
  job = script.split("--job-name=", 1)[1].split("\n", 1)[0]
  path = os.path.join(log_dir, f"{job}.sbatch")
  if args.dry_run:
    print(shlex.join(["mkdir", "-p", log_dir]))
    print(f"cat > {shlex.quote(path)} <<'{HEREDOC_END}'")
    print(script, end="")
    print(HEREDOC_END)
    print(shlex.join(["sbatch", path]))
    return
  py = args.python if os.path.isabs(args.python) else os.path.join(args.repo_dir, args.python)
  if not os.access(py, os.X_OK):
    fail(f"{py} does not exist; run `make install` (and pip install \"jax[cuda12]\") in {args.repo_dir} first",
         status=1)
  os.makedirs(log_dir, exist_ok=True)
  with open(path, "w") as f:
    f.write(script)
  print(f"{PROG}: wrote {path}", flush=True)
  print(f"+ sbatch {path}", flush=True)
  try:
    rc = subprocess.call(["sbatch", path])
  except FileNotFoundError:
    fail("sbatch not found on PATH; run this on a SLURM login node (or use --dry-run)", status=1)
  if rc != 0:
    fail(f"sbatch failed with exit status {rc}; the script is in {path}", status=1)


if __name__ == "__main__":
  main()
