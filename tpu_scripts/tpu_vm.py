#!/usr/bin/env python3
"""Cloud TPU VM / pod slice for mmjax: create, set up, launch on every worker, watch, stop, delete.

  python tpu_scripts/tpu_vm.py create    --name N --zone Z --accelerator v5litepod-64 [--version V] [--spot]
  python tpu_scripts/tpu_vm.py setup     --name N --zone Z [--repo-url URL] [--mount-bucket B]
  python tpu_scripts/tpu_vm.py copy-data --name N --zone Z --src gs://B/tfds
  python tpu_scripts/tpu_vm.py launch    --name N --zone Z --config experiments/X.py --workdir /mnt/gcs/B/runs/x
                                         [--extra batch_size=4096 optim.lr=5e-4]
  python tpu_scripts/tpu_vm.py logs      --name N --zone Z [--worker 0]
  python tpu_scripts/tpu_vm.py stop      --name N --zone Z          (SIGTERM: mmjax checkpoints and exits 75)
  python tpu_scripts/tpu_vm.py exec      --name N --zone Z [--worker 0] -- CMD...
  python tpu_scripts/tpu_vm.py delete    --name N --zone Z [--yes]

Every subcommand takes --dry-run (print the exact commands, one per line, run nothing) and --project. Without it
the commands run one after the other, output streamed, stopping at the first failure. A multi-host slice runs the
same `python -m mmjax.main ... --distributed=auto` on every worker; jax.distributed.initialize() finds the others.
Standard library only. See tpu_scripts/README.md.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

PROG = "tpu_vm.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GCLOUD = ["gcloud", "compute", "tpus", "tpu-vm"]
REMOTE_TARBALL = "mmjax-src.tar.gz"
MOUNT_ROOT = "/mnt/gcs"

# TPU family -> (runtime image for JAX, allowed sizes or None for "a multiple of 8"). The runtime images are the ones
# Google lists for JAX/PyTorch (cloud.google.com/tpu/docs/runtimes); v5e/v6e sizes count chips, the others cores.
FAMILIES = {
    "v2": ("tpu-ubuntu2204-base", None),
    "v3": ("tpu-ubuntu2204-base", None),
    "v4": ("tpu-ubuntu2204-base", None),
    "v5p": ("v2-alpha-tpuv5", None),
    "v5litepod": ("v2-alpha-tpuv5-lite", (1, 4, 8, 16, 32, 64, 128, 256)),
    "v6e": ("v2-alpha-tpuv6e", (1, 4, 8, 16, 32, 64, 128, 256)),
}
ALIASES = {"v5e": "v5litepod", "v5lite": "v5litepod", "v6": "v6e"}


class Parser(argparse.ArgumentParser):
  """argparse with one-line errors (exit status 2) instead of usage + error."""

  def error(self, message: str) -> None:
    fail(message)


def fail(message: str, status: int = 2) -> None:
  print(f"{PROG}: error: {message}", file=sys.stderr)
  sys.exit(status)


# ------------------------------------------------------------------------------------------------ validation
def check(value: str, pattern: str, flag: str, what: str) -> str:
  if not re.fullmatch(pattern, value):
    fail(f"{flag} {value!r}: {what}")
  return value


def accelerator_family(accel: str) -> str:
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", accel)
  if not m:
    fail(f"--accelerator {accel!r}: expected TYPE-SIZE, e.g. v5litepod-64, v6e-8, v4-32, v5p-128")
  family, size = m.group(1), int(m.group(2))
  if family in ALIASES:
    fail(f"--accelerator {accel!r}: the accelerator type is {ALIASES[family]}-{size}")
  if family not in FAMILIES:
    fail(f"--accelerator {accel!r}: unknown TPU family {family!r} (known: {', '.join(FAMILIES)})")
  sizes = FAMILIES[family][1]
  if sizes is not None and size not in sizes:
    fail(f"--accelerator {accel!r}: {family} comes in {', '.join(map(str, sizes))} chips")
  if sizes is None and (size < 8 or size % 8):
    fail(f"--accelerator {accel!r}: {family} sizes count TensorCores, a multiple of 8 (e.g. {family}-8, {family}-32)")
  return family


def parse_extra(items: list[str]) -> list[str]:
  """["batch_size=64", "optim.lr=1e-3"] -> ["--config.batch_size=64", "--config.optim.lr=1e-3"]."""
  out = []
  for item in items:
    item = item[len("--config."):] if item.startswith("--config.") else item
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=.*", item):
      fail(f"--extra {item!r}: expected KEY=VALUE with a config key such as batch_size or optim.lr "
           f"(it becomes --config.KEY=VALUE)")
    out.append(f"--config.{item}")
  return out


def check_config(config: str, root: str) -> str:
  path = config.split(":", 1)[0]
  if os.path.isabs(path) or not path.endswith(".py"):
    fail(f"--config {config!r}: give an experiment file relative to the repository, e.g. experiments/clip_shapes.py")
  if not os.path.isfile(os.path.join(root, path)):
    fail(f"--config {config!r}: {path} does not exist in {root}")
  return config


def check_workdir(workdir: str) -> str:
  m = re.fullmatch(r"gs://([^/]+)(/.*)?", workdir)
  if m:
    fail(f"--workdir {workdir!r}: mmjax writes its workdir with local file I/O, so a gs:// path would become a local "
         f"folder named 'gs:'; mount the bucket on every worker (setup --mount-bucket {m.group(1)}) and pass "
         f"--workdir {MOUNT_ROOT}/{m.group(1)}{m.group(2) or ''}")
  if not workdir or any(c.isspace() for c in workdir) or "://" in workdir:
    fail(f"--workdir {workdir!r}: expected a path on the workers, e.g. {MOUNT_ROOT}/BUCKET/runs/NAME")
  return workdir


def bucket_name(value: str) -> str:
  name = value[len("gs://"):] if value.startswith("gs://") else value
  name = name.rstrip("/")
  return check(name, r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", "--mount-bucket", "expected a bucket name such as "
               "my-bucket or gs://my-bucket (lowercase letters, digits, '-', '_', '.')")


# ------------------------------------------------------------------------------------------------ commands
def target(args) -> list[str]:
  out = [args.name, f"--zone={args.zone}"]
  if args.project:
    out.append(f"--project={args.project}")
  return out


def ssh(args, remote: str, worker: str = "all") -> list[str]:
  cmd = GCLOUD + ["ssh"] + target(args) + [f"--worker={worker}"]
  if args.internal_ip:
    cmd.append("--internal-ip")
  return cmd + [f"--command={remote}"]


def in_repo(args, *words: str) -> str:
  return f"cd {shlex.quote(args.remote_dir)} && " + shlex.join(words)


def cmd_create(args) -> list[list[str]]:
  family = accelerator_family(args.accelerator)
  version = args.version or FAMILIES[family][0]
  check(version, r"[a-z0-9][a-z0-9.-]*", "--version", "expected a TPU runtime version such as v2-alpha-tpuv5-lite")
  cmd = GCLOUD + ["create"] + target(args) + [f"--accelerator-type={args.accelerator}", f"--version={version}"]
  if args.spot:
    cmd.append("--spot")
  if args.preemptible:
    cmd.append("--preemptible")
  for extra in args.create_arg:
    cmd.append(check(extra, r"--[a-z][a-z-]*(=\S+)?", "--create-arg", "expected one gcloud flag such as "
                     "--reserved or --service-account=SA (write it as --create-arg=--flag=value)"))
  return [cmd]


def cmd_setup(args) -> list[list[str]]:
  py = check(args.python, r"python3\.\d+|/[\w./-]+", "--python", "expected python3.X or an absolute path")
  cmds = []
  if args.repo_url:
    check(args.repo_url, r"[\w@:/.+~-]+", "--repo-url", "expected a git URL")
    check(args.ref, r"[\w./@+-]+", "--ref", "expected a branch, tag or commit")
    d = shlex.quote(args.remote_dir)
    fetch = (f"(test -d {d}/.git || git clone -q {shlex.quote(args.repo_url)} {d}) && "
             f"git -C {d} fetch -q origin {shlex.quote(args.ref)} && git -C {d} checkout -q --detach FETCH_HEAD")
  else:
    check(args.ref, r"[\w./@+~^-]+", "--ref", "expected a git revision such as HEAD or a tag")
    tarball = args.tarball or f"/tmp/mmjax-src-{args.name}.tar.gz"
    cmds.append(["git", "-C", ROOT, "archive", "--format=tar.gz", f"--prefix={args.remote_dir}/", "-o", tarball,
                 args.ref])
    cmds.append(GCLOUD + ["scp", tarball, f"{args.name}:{REMOTE_TARBALL}", f"--zone={args.zone}"] +
                ([f"--project={args.project}"] if args.project else []) + ["--worker=all"] +
                (["--internal-ip"] if args.internal_ip else []))
    fetch = f"tar -xzf {REMOTE_TARBALL} && rm {REMOTE_TARBALL}"
  steps = [fetch, f"cd {shlex.quote(args.remote_dir)}"]
  if args.mount_bucket:      # first: a bucket the workers cannot reach fails before the long install
    steps.append(f"bash tpu_scripts/worker.sh mount {bucket_name(args.mount_bucket)}")
  steps.append(f"bash tpu_scripts/worker.sh install {py}")
  return cmds + [ssh(args, " && ".join(steps))]


def cmd_copy_data(args) -> list[list[str]]:
  check(args.src, r"gs://[a-z0-9][a-z0-9._-]*[a-z0-9](/[^\s]*)?", "--src", "expected gs://BUCKET/PATH of prepared data")
  check(args.dest, r"[\w./~-]+", "--dest", "expected a folder on the workers")
  dest = args.dest
  return [ssh(args, f"mkdir -p {shlex.quote(dest)} && gcloud storage rsync --recursive {shlex.quote(args.src)} "
                    f"{shlex.quote(dest)}")]


def cmd_launch(args) -> list[list[str]]:
  config = check_config(args.config, ROOT)
  workdir = check_workdir(args.workdir)
  run = [".venv/bin/python", "-m", "mmjax.main", "--config", config, "--workdir", workdir, "--distributed=auto",
         *parse_extra(args.extra)]
  return [ssh(args, in_repo(args, "bash", "tpu_scripts/worker.sh", "start", args.log, *run))]


def cmd_logs(args) -> list[list[str]]:
  log = shlex.quote(f"{args.remote_dir}/{args.log}")
  tail = f"tail -n {args.lines} -F {log}" if args.follow else f"tail -n {args.lines} {log}"
  return [ssh(args, tail, worker=args.worker)]


def cmd_stop(args) -> list[list[str]]:
  return [ssh(args, in_repo(args, "bash", "tpu_scripts/worker.sh", "stop", args.log))]


def cmd_exec(args) -> list[list[str]]:
  words = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
  if not words:
    fail("exec needs a command after --, e.g. exec --worker 0 -- .venv/bin/python -m mmjax.main --mode verify "
         "--workdir DIR")
  if len(words) > 1 and "--dry-run" in words:   # easy to append out of habit, and then exec would really run
    fail("--dry-run after -- would be passed to the remote command; put it before -- (to pass it to the remote "
         "command, give the command as one quoted argument)")
  remote = f"cd {shlex.quote(args.remote_dir)} && " + (words[0] if len(words) == 1 else shlex.join(words))
  return [ssh(args, remote, worker=args.worker)]


def cmd_delete(args) -> list[list[str]]:
  return [GCLOUD + ["delete"] + target(args) + (["--quiet"] if args.yes else [])]


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> Parser:
  common = Parser(add_help=False)
  common.add_argument("--name", required=True, help="TPU VM name, e.g. mmjax-v5e64")
  common.add_argument("--zone", required=True, help="zone, e.g. us-west4-a")
  common.add_argument("--project", default=None, help="project id (default: gcloud's configured project)")
  common.add_argument("--dry-run", action="store_true", help="print the commands, one per line; run nothing")
  common.add_argument("--internal-ip", action="store_true", help="ssh/scp over internal IPs (from a VM in the VPC)")
  common.add_argument("--remote-dir", default="mmjax", help="checkout folder in the workers' home (default mmjax)")
  common.add_argument("--log", default="runs/mmjax.log", help="log file on each worker, relative to the checkout")

  p = Parser(prog=PROG, description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True, metavar="{create,setup,copy-data,launch,logs,stop,exec,delete}")

  s = sub.add_parser("create", parents=[common], help="create the TPU VM / slice")
  s.add_argument("--accelerator", required=True, help="accelerator type, e.g. v5litepod-64, v6e-8, v4-32")
  s.add_argument("--version", default=None, help="runtime image (default: the JAX image of the TPU family)")
  kind = s.add_mutually_exclusive_group()
  kind.add_argument("--spot", action="store_true", help="spot capacity (cheaper, preemptible, no time limit)")
  kind.add_argument("--preemptible", action="store_true", help="legacy preemptible (24 h limit)")
  s.add_argument("--create-arg", action="append", default=[], metavar="--FLAG[=VALUE]",
                 help="more flags for `gcloud compute tpus tpu-vm create`, e.g. --create-arg=--reserved")
  s.set_defaults(fn=cmd_create)

  s = sub.add_parser("setup", parents=[common], help="copy the code to every worker and `make install` there")
  s.add_argument("--repo-url", default=None, help="git clone this URL on the workers instead of copying this checkout")
  s.add_argument("--ref", default="HEAD", help="git revision to ship or check out (default HEAD; local changes that "
                 "are not committed are not shipped)")
  s.add_argument("--tarball", default=None, help="local path for the git archive (default /tmp/mmjax-src-NAME.tar.gz)")
  s.add_argument("--python", default="python3.11", help="Python >= 3.11 on the workers (apt-installed if missing)")
  s.add_argument("--mount-bucket", default=None, help=f"mount gs://BUCKET at {MOUNT_ROOT}/BUCKET on every worker")
  s.set_defaults(fn=cmd_setup)

  s = sub.add_parser("copy-data", parents=[common], help="rsync prepared data from GCS to every worker's disk")
  s.add_argument("--src", required=True, help="gs://BUCKET/PATH holding prepared data (a TFDS data dir)")
  s.add_argument("--dest", default="tensorflow_datasets", help="folder on the workers, relative to home (default "
                 "tensorflow_datasets = mmjax's default data dir)")
  s.set_defaults(fn=cmd_copy_data)

  s = sub.add_parser("launch", parents=[common], help="start training on every worker (detached, logged)")
  s.add_argument("--config", required=True, help="experiment file, e.g. experiments/clip_flickr8k.py")
  s.add_argument("--workdir", required=True, help=f"run folder shared by all workers, e.g. {MOUNT_ROOT}/B/runs/x")
  s.add_argument("--extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                 help="config overrides, passed as --config.KEY=VALUE")
  s.set_defaults(fn=cmd_launch)

  s = sub.add_parser("logs", parents=[common], help="tail a worker's log (follows by default)")
  s.add_argument("--worker", default="0", help="worker index, or 'all' (default 0: process 0 logs the metrics)")
  s.add_argument("--lines", type=int, default=100, help="lines of history (default 100)")
  s.add_argument("--no-follow", dest="follow", action="store_false", help="print and return")
  s.set_defaults(fn=cmd_logs)

  s = sub.add_parser("stop", parents=[common], help="SIGTERM the run on every worker (checkpoint, exit 75)")
  s.set_defaults(fn=cmd_stop)

  s = sub.add_parser("exec", parents=[common], help="run a command in the checkout on workers")
  s.add_argument("--worker", default="all", help="worker index, list (1,3), range (0-3) or 'all' (default)")
  s.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD... (one argument is passed to the shell as is)")
  s.set_defaults(fn=cmd_exec)

  s = sub.add_parser("delete", parents=[common], help="delete the TPU VM / slice")
  s.add_argument("--yes", action="store_true", help="do not ask for confirmation (gcloud --quiet)")
  s.set_defaults(fn=cmd_delete)
  return p


def validate_common(args) -> None:
  check(args.name, r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", "--name", "expected lowercase letters, digits and '-', "
        "starting with a letter (at most 63 characters)")
  check(args.zone, r"[a-z]+-[a-z]+[0-9]+-[a-z]", "--zone", "expected a zone such as us-west4-a or europe-west4-b")
  if args.project is not None:
    check(args.project, r"[a-z][-a-z0-9]{4,28}[a-z0-9]", "--project", "expected a project id (6-30 lowercase "
          "letters, digits and '-')")
  check(args.remote_dir, r"[\w.-]+(/[\w.-]+)*", "--remote-dir", "expected a relative folder such as mmjax")
  check(args.log, r"[\w.-]+(/[\w.-]+)*\.log", "--log", "expected a relative path ending in .log")
  if hasattr(args, "worker"):
    check(args.worker, r"all|\d+([,-]\d+)*", "--worker", "expected a worker index (0), a list (0,2), a range (0-3) or "
          "'all'")
  if getattr(args, "lines", 1) < 1:
    fail(f"--lines {args.lines}: expected a positive number")


def render(cmd: list[str]) -> str:
  """shlex.join, but `--flag=VALUE` keeps the flag outside the quotes: --command='cd mmjax && ...'."""
  out = []
  for word in cmd:
    m = re.fullmatch(r"(--[a-z][a-z-]*=)(.*)", word, re.S)
    out.append(m.group(1) + shlex.quote(m.group(2)) if m and m.group(2) else shlex.quote(word))
  return " ".join(out)


def execute(commands: list[list[str]], dry_run: bool) -> None:
  for cmd in commands:
    line = render(cmd)
    if dry_run:
      print(line)
      continue
    print(f"+ {line}", flush=True)
    try:
      rc = subprocess.call(cmd)
    except FileNotFoundError:
      hint = " (install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install)" if cmd[0] == "gcloud" else ""
      fail(f"{cmd[0]} not found on PATH{hint}", status=1)
    except KeyboardInterrupt:
      sys.exit(130)
    if rc != 0:
      fail(f"this command failed with exit status {rc}; stopped before the next one: {line}", status=1)


def main(argv: list[str] | None = None) -> None:
  args = build_parser().parse_args(argv)
  validate_common(args)
  commands = args.fn(args)
  if not args.dry_run and args.command == "setup" and not args.repo_url:
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
      print(f"{PROG}: note: {len(dirty.splitlines())} modified tracked file(s) are not shipped; setup copies "
            f"`git archive {args.ref}` (commit them first)", file=sys.stderr)
  execute(commands, args.dry_run)


if __name__ == "__main__":
  main()
