"""tpu_scripts/: every script and subcommand with --dry-run in a subprocess, its printed commands against the exact
commands written out here; the one-line validation errors (exit status 2); and the shell parts run for real on this
machine with stand-ins for what only exists on a TPU worker or a SLURM cluster (a fake `.venv/bin/python`, `srun`,
`scancel`, `scontrol`): the detached launch / stop on a worker, the sbatch script's requeue at the time limit, and
the script's XLA flags against the installed jaxlib (which aborts on an unknown flag)."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

TPU_VM = os.path.join(ROOT, "tpu_scripts", "tpu_vm.py")
SLURM = os.path.join(ROOT, "tpu_scripts", "slurm.py")
WORKER_SH = os.path.join(ROOT, "tpu_scripts", "worker.sh")
SSH = "gcloud compute tpus tpu-vm ssh"
XLA = ("--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_all_reduce_combine_threshold_bytes=134217728 "
       "--xla_gpu_all_gather_combine_threshold_bytes=134217728 --xla_gpu_reduce_scatter_combine_threshold_bytes=134217728")


def run(script, *args, **kw):
  # -S -I: no site-packages, so this also checks that the scripts need nothing beyond the standard library
  return subprocess.run([sys.executable, "-S", "-I", script, *args], capture_output=True, text=True, timeout=30,
                        cwd=ROOT, **kw)


def dry(script, *args) -> list[str]:
  # --dry-run right after the subcommand: after exec's `--` it would belong to the remote command
  proc = run(script, args[0], "--dry-run", *args[1:]) if script == TPU_VM else run(script, *args, "--dry-run")
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ""
  return proc.stdout.splitlines()


T = ("--name", "mmjax-v5e64", "--zone", "us-west4-a")   # the TPU every case targets

TPU_CASES = [
    (("create", *T, "--accelerator", "v5litepod-64", "--spot"),
     ["gcloud compute tpus tpu-vm create mmjax-v5e64 --zone=us-west4-a --accelerator-type=v5litepod-64 "
      "--version=v2-alpha-tpuv5-lite --spot"]),
    (("create", "--name", "t6", "--zone", "europe-west4-a", "--project", "my-proj-1", "--accelerator", "v6e-8",
      "--preemptible"),
     ["gcloud compute tpus tpu-vm create t6 --zone=europe-west4-a --project=my-proj-1 --accelerator-type=v6e-8 "
      "--version=v2-alpha-tpuv6e --preemptible"]),
    (("create", *T, "--accelerator", "v4-32", "--version", "tpu-ubuntu2204-base", "--create-arg=--reserved",
      "--create-arg=--service-account=sa@p.iam.gserviceaccount.com"),
     ["gcloud compute tpus tpu-vm create mmjax-v5e64 --zone=us-west4-a --accelerator-type=v4-32 "
      "--version=tpu-ubuntu2204-base --reserved --service-account=sa@p.iam.gserviceaccount.com"]),
    (("setup", *T, "--mount-bucket", "gs://my-bkt/"),
     [f"git -C {ROOT} archive --format=tar.gz --prefix=mmjax/ -o /tmp/mmjax-src-mmjax-v5e64.tar.gz HEAD",
      "gcloud compute tpus tpu-vm scp /tmp/mmjax-src-mmjax-v5e64.tar.gz mmjax-v5e64:mmjax-src.tar.gz "
      "--zone=us-west4-a --worker=all",
      f"{SSH} mmjax-v5e64 --zone=us-west4-a --worker=all --command='tar -xzf mmjax-src.tar.gz && rm "
      "mmjax-src.tar.gz && cd mmjax && bash tpu_scripts/worker.sh mount my-bkt && bash tpu_scripts/worker.sh "
      "install python3.11'"]),
    (("setup", *T, "--repo-url", "https://github.com/me/mmjax.git", "--ref", "v0.1", "--internal-ip"),
     [f"{SSH} mmjax-v5e64 --zone=us-west4-a --worker=all --internal-ip --command='(test -d mmjax/.git || git clone "
      "-q https://github.com/me/mmjax.git mmjax) && git -C mmjax fetch -q origin v0.1 && git -C mmjax checkout -q "
      "--detach FETCH_HEAD && cd mmjax && bash tpu_scripts/worker.sh install python3.11'"]),
    (("copy-data", *T, "--src", "gs://my-bkt/tfds"),
     [f"{SSH} mmjax-v5e64 --zone=us-west4-a --worker=all --command='mkdir -p tensorflow_datasets && gcloud storage "
      "rsync --recursive gs://my-bkt/tfds tensorflow_datasets'"]),
    (("launch", *T, "--config", "experiments/clip_flickr8k.py", "--workdir", "/mnt/gcs/my-bkt/runs/clip",
      "--extra", "batch_size=4096", "optim.lr=5e-4", "--extra", "data.data_dir=/mnt/gcs/my-bkt/tfds"),
     [f"{SSH} mmjax-v5e64 --zone=us-west4-a --worker=all --command='cd mmjax && bash tpu_scripts/worker.sh start "
      "runs/mmjax.log .venv/bin/python -m mmjax.main --config experiments/clip_flickr8k.py --workdir "
      "/mnt/gcs/my-bkt/runs/clip --distributed=auto --config.batch_size=4096 --config.optim.lr=5e-4 "
      "--config.data.data_dir=/mnt/gcs/my-bkt/tfds'"]),
    (("logs", *T), [f"{SSH} mmjax-v5e64 --zone=us-west4-a --worker=0 --command='tail -n 100 -F mmjax/runs/mmjax.log'"]),
    (("logs", *T, "--worker", "3", "--lines", "20", "--no-follow"),
     [f"{SSH} mmjax-v5e64 --zone=us-west4-a --worker=3 --command='tail -n 20 mmjax/runs/mmjax.log'"]),
    (("stop", *T),
     [f"{SSH} mmjax-v5e64 --zone=us-west4-a --worker=all --command='cd mmjax && bash tpu_scripts/worker.sh stop "
      "runs/mmjax.log'"]),
    (("exec", *T, "--worker", "0", "--", ".venv/bin/python", "-m", "mmjax.main", "--mode", "verify", "--workdir",
      "/mnt/gcs/my-bkt/runs/clip"),
     [f"{SSH} mmjax-v5e64 --zone=us-west4-a --worker=0 --command='cd mmjax && .venv/bin/python -m mmjax.main --mode "
      "verify --workdir /mnt/gcs/my-bkt/runs/clip'"]),
    (("delete", *T), ["gcloud compute tpus tpu-vm delete mmjax-v5e64 --zone=us-west4-a"]),
    (("delete", *T, "--project", "my-proj-1", "--yes"),
     ["gcloud compute tpus tpu-vm delete mmjax-v5e64 --zone=us-west4-a --project=my-proj-1 --quiet"]),
]


@pytest.mark.parametrize("args,expected", TPU_CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(TPU_CASES)])
def test_tpu_vm_dry_run_prints_the_exact_commands(args, expected):
  assert dry(TPU_VM, *args) == expected


TPU_ERRORS = [
    (("create", *T, "--accelerator", "v5e64"), "--accelerator 'v5e64': expected TYPE-SIZE"),
    (("create", *T, "--accelerator", "v5e-64"), "--accelerator 'v5e-64': the accelerator type is v5litepod-64"),
    (("create", *T, "--accelerator", "v9x-8"), "unknown TPU family 'v9x'"),
    (("create", *T, "--accelerator", "v5litepod-48"), "v5litepod comes in 1, 4, 8, 16, 32, 64, 128, 256 chips"),
    (("create", *T, "--accelerator", "v4-12"), "v4 sizes count TensorCores, a multiple of 8"),
    (("create", *T, "--accelerator", "v4-8", "--spot", "--preemptible"), "not allowed with argument"),
    (("create", *T, "--accelerator", "v4-8", "--create-arg=--x;reboot"), "--create-arg '--x;reboot'"),
    (("create", "--name", "My_TPU", "--zone", "us-west4-a", "--accelerator", "v4-8"), "--name 'My_TPU'"),
    (("create", "--name", "t", "--zone", "uswest4a", "--accelerator", "v4-8"), "--zone 'uswest4a'"),
    (("create", "--zone", "us-west4-a", "--accelerator", "v4-8"), "the following arguments are required: --name"),
    (("launch", *T, "--config", "experiments/clip_shapes.py", "--workdir", "gs://b/runs/x"),
     "--workdir /mnt/gcs/b/runs/x"),
    (("launch", *T, "--config", "experiments/nope.py", "--workdir", "/w"), "experiments/nope.py does not exist"),
    (("launch", *T, "--config", "experiments/clip_shapes.py", "--workdir", "/w", "--extra", "batch size=4"),
     "--extra 'batch size=4': expected KEY=VALUE"),
    (("setup", *T, "--python", "python2"), "--python 'python2'"),
    (("logs", *T, "--worker", "first"), "--worker 'first'"),
    (("exec", *T), "exec needs a command after --"),
    (("exec", *T, "--", "ls", "--dry-run"), "--dry-run after -- would be passed to the remote command"),
    ((), "the following arguments are required: {create,setup,copy-data,launch,logs,stop,exec,delete}"),
]


@pytest.mark.parametrize("args,message", TPU_ERRORS, ids=[str(i) for i in range(len(TPU_ERRORS))])
def test_tpu_vm_validation_errors_are_one_line_with_status_2(args, message):
  proc = run(TPU_VM, *args[:1], "--dry-run", *args[1:])
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("tpu_vm.py: error: "), proc.stderr
  assert message in proc.stderr


# ------------------------------------------------------------------------------------------------ slurm
S = ("--nodes", "4", "--gpus-per-node", "8", "--time", "24:00:00", "--config", "experiments/clip_flickr8k.py",
     "--workdir", "/shared/runs/clip-4x8")


def test_slurm_dry_run_prints_the_exact_script_and_commands():
  out = dry(SLURM, *S, "--partition", "gpu", "--account", "my-acct", "--extra", "data.data_dir=/shared/tfds",
            "batch_size=4096", "--env", "NCCL_DEBUG=WARN")
  assert out == [
      f"mkdir -p {ROOT}/runs/slurm",
      f"cat > {ROOT}/runs/slurm/mmjax-clip_flickr8k.sbatch <<'MMJAX_SBATCH_EOF'",
      "#!/bin/bash",
      "#SBATCH --job-name=mmjax-clip_flickr8k",
      "#SBATCH --nodes=4",
      "#SBATCH --ntasks-per-node=1",
      "#SBATCH --gpus-per-node=8",
      "#SBATCH --cpus-per-task=64",
      "#SBATCH --exclusive",
      "#SBATCH --mem=0",
      "#SBATCH --time=24:00:00",
      "#SBATCH --partition=gpu",
      "#SBATCH --account=my-acct",
      f"#SBATCH --output={ROOT}/runs/slurm/%x-%j.out",
      "#SBATCH --open-mode=append",
      "#SBATCH --signal=B:USR1@300",
      "#SBATCH --requeue",
      "# Written by tpu_scripts/slurm.py: 4 node(s) x 8 GPU(s), one process per node driving all its GPUs.",
      "set -u",
      f"cd {ROOT} || exit 1",
      "",
      f'export XLA_FLAGS="{XLA}${{XLA_FLAGS:+ $XLA_FLAGS}}"   # yours (set before sbatch) come last and win',
      "export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}",
      "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7   # else jax.distributed under SLURM keeps only GPU SLURM_LOCALID",
      "export NCCL_DEBUG=WARN",
      "",
      "stop_requested=0",
      "on_time_limit() {   # SIGUSR1 from SLURM --grace seconds before the time limit",
      "  stop_requested=1",
      '  echo "mmjax-slurm: time limit in 300 s: SIGTERM to the training processes (checkpoint, exit 75)"',
      '  scancel --signal=TERM "$SLURM_JOB_ID"',
      "}",
      "trap on_time_limit USR1",
      "",
      "srun --ntasks-per-node=1 --cpus-per-task=64 .venv/bin/python -m mmjax.main --config "
      "experiments/clip_flickr8k.py --workdir /shared/runs/clip-4x8 --distributed=auto "
      "--config.data.data_dir=/shared/tfds --config.batch_size=4096 &",
      "srun_pid=$!",
      'while kill -0 "$srun_pid" 2>/dev/null; do wait "$srun_pid"; done   # a trapped signal interrupts wait',
      'wait "$srun_pid"; rc=$?',
      'if [ "$rc" -eq 75 ] && [ "$stop_requested" -eq 1 ]; then',
      '  echo "mmjax-slurm: checkpoint saved at the time limit; requeueing job $SLURM_JOB_ID to resume"',
      '  scontrol requeue "$SLURM_JOB_ID"',
      "fi",
      'echo "mmjax-slurm: exit status $rc"',
      'exit "$rc"',
      "MMJAX_SBATCH_EOF",
      f"sbatch {ROOT}/runs/slurm/mmjax-clip_flickr8k.sbatch",
  ]


def test_slurm_per_gpu_tasks_and_options():
  out = dry(SLURM, "--nodes", "2", "--gpus-per-node", "4", "--time", "2-00:00:00", "--tasks", "per-gpu",
            "--cpus-per-gpu", "12", "--grace", "600", "--job-name", "clip-2x4", "--config",
            "experiments/clip_shapes.py:runlocal", "--workdir", "/shared/r", "--xla-flags", "", "--no-requeue")
  script = "\n".join(out)
  for line in ["#SBATCH --job-name=clip-2x4", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
               "#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=12", "#SBATCH --time=2-00:00:00",
               "#SBATCH --signal=B:USR1@600",
               "srun --ntasks-per-node=4 --cpus-per-task=12 .venv/bin/python -m mmjax.main --config "
               "experiments/clip_shapes.py:runlocal --workdir /shared/r --distributed=auto &",
               f"sbatch {ROOT}/runs/slurm/clip-2x4.sbatch"]:
    assert line in out, line
  # per GPU: jax's own SLURM default (task i -> GPU i) is what we want, so no JAX_LOCAL_DEVICE_IDS; no XLA flags
  # asked for; no requeue asked for; no partition/account given.
  for absent in ("JAX_LOCAL_DEVICE_IDS", "XLA_FLAGS", "scontrol", "--requeue", "--partition", "--account"):
    assert absent not in script, absent


SLURM_ERRORS = [
    (("--time", "5"), "--grace 300: must be positive and shorter than the time limit (300 s)"),
    (("--time", "1-00:00:00", "--grace", "86400"), "shorter than the time limit (86400 s)"),
    (("--time", "1:30"), "shorter than the time limit (90 s)"),           # M:S
    (("--time", "soon"), "--time 'soon': expected HH:MM:SS"),
    (("--nodes", "0"), "--nodes 0: expected at least 1"),
    (("--extra", "batch_size=100"), "the global batch must be a multiple of the 32 GPUs (4 nodes x 8)"),
    (("--workdir", "runs/x"), "--workdir 'runs/x': expected an absolute path"),
    (("--workdir", "gs://b/x"), "--workdir 'gs://b/x': mmjax writes its workdir with local file I/O"),
    (("--partition", "gpu;rm"), "--partition 'gpu;rm'"),
    (("--config", "experiments/missing.py"), "experiments/missing.py does not exist"),
    (("--tasks", "per-core"), "argument --tasks: invalid choice: 'per-core'"),
    (("--xla-flags", "--xla_a=$(reboot)"), "--xla-flags"),
    (("--env", "1X=2"), "--env '1X=2': expected NAME=VALUE"),
]


@pytest.mark.parametrize("args,message", SLURM_ERRORS, ids=[str(i) for i in range(len(SLURM_ERRORS))])
def test_slurm_validation_errors_are_one_line_with_status_2(args, message):
  options = dict(zip(S[::2], S[1::2]))
  options.update(zip(args[::2], args[1::2]))
  proc = run(SLURM, *[f"{k}={v}" for k, v in options.items()], "--dry-run")
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("slurm.py: error: "), proc.stderr
  assert message in proc.stderr


# ------------------------------------------------------------------------------------------------ shell, for real
def write_exec(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, 0o755)


def remote_command(line: str) -> str:
  words = shlex.split(line)
  return next(w[len("--command="):] for w in words if w.startswith("--command="))


def wait_until(cond, timeout=10.0):
  end = time.time() + timeout
  while time.time() < end:
    if cond():
      return True
    time.sleep(0.05)
  return False


# A stand-in for the trainer: prints its arguments, then on SIGTERM "checkpoints" and exits 75 like mmjax.
FAKE_TRAINER = """#!/bin/bash
echo "fake python: $*"
trap 'echo "fake python: SIGTERM, checkpoint saved"; exit 75' TERM
while true; do sleep 0.05; done
"""


def test_worker_launch_runs_detached_refuses_a_second_run_and_stop_gives_exit_75(tmp_path):
  home = tmp_path                                       # the worker's home, with the checkout in mmjax/
  repo = home / "mmjax"
  (repo / "tpu_scripts").mkdir(parents=True)
  shutil.copy(WORKER_SH, str(repo / "tpu_scripts" / "worker.sh"))
  write_exec(str(repo / ".venv" / "bin" / "python"), FAKE_TRAINER)
  args = ("--config", "experiments/clip_shapes.py", "--workdir", "/mnt/gcs/b/runs/x", "--extra", "batch_size=64")
  launch = remote_command(dry(TPU_VM, "launch", *T, *args)[0])
  stop = remote_command(dry(TPU_VM, "stop", *T)[0])
  pidfile = repo / "runs" / "mmjax.pid"
  log = repo / "runs" / "mmjax.log"
  bash = lambda cmd: subprocess.run(["bash", "-c", cmd], cwd=home, capture_output=True, text=True, timeout=20)
  try:
    first = bash(launch)
    assert first.returncode == 0, first.stderr
    assert "started pid" in first.stdout and pidfile.exists()
    pid = int(pidfile.read_text())
    os.kill(pid, 0)                                       # alive after the ssh command returned
    second = bash(launch)
    assert second.returncode == 1 and "already running" in second.stderr
    stopped = bash(stop)
    assert stopped.returncode == 0 and f"sent SIGTERM to pid {pid}" in stopped.stdout
    assert wait_until(lambda: not pidfile.exists()), "the run did not stop"
    assert wait_until(lambda: "exit status" in log.read_text())
    lines = log.read_text().splitlines()
    run_cmd = ".venv/bin/python -m mmjax.main --config experiments/clip_shapes.py --workdir /mnt/gcs/b/runs/x " \
              "--distributed=auto --config.batch_size=64"
    assert lines[0].startswith("=== ") and lines[0].endswith(f": {run_cmd}")
    assert lines[1] == "fake python: " + run_cmd.split(" ", 1)[1]
    assert lines[2] == "fake python: SIGTERM, checkpoint saved"
    assert lines[3].endswith("exit status 75 (stopped by a signal after a checkpoint; rerun the same launch to "
                             "resume)")
    assert len(lines) == 4
    again = bash(stop)
    assert again.returncode == 0 and "nothing running" in again.stdout
  finally:
    if pidfile.exists():
      os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_worker_launch_reports_a_command_that_fails_at_once(tmp_path):
  repo = tmp_path / "mmjax"
  (repo / "tpu_scripts").mkdir(parents=True)
  shutil.copy(WORKER_SH, str(repo / "tpu_scripts" / "worker.sh"))      # no .venv: `make install` never ran
  launch = remote_command(dry(TPU_VM, "launch", *T, "--config", "experiments/clip_shapes.py", "--workdir", "/w")[0])
  proc = subprocess.run(["bash", "-c", launch], cwd=tmp_path, capture_output=True, text=True, timeout=20)
  assert proc.returncode == 1
  assert "the command exited at once" in proc.stderr and "exit status 127" in proc.stderr


def test_worker_install_and_usage_errors(tmp_path):
  sh = lambda *a: subprocess.run(["bash", WORKER_SH, *a], cwd=tmp_path, capture_output=True, text=True, timeout=20)
  proc = sh("install", "/nonexistent/python3")           # not a python3.X name, so no apt: a clear stop instead
  assert proc.returncode == 1 and "/nonexistent/python3 (with its venv module) or make is missing" in proc.stderr
  proc = sh("launch")
  assert proc.returncode == 1 and "usage: worker.sh install|mount|start|stop" in proc.stderr


# Stand-ins for SLURM's commands and the trainer, recording what they were asked to do under $FAKE_DIR.
FAKE_SLURM_PYTHON = """#!/bin/bash
trap 'exit 75' TERM
echo $$ > "$FAKE_DIR/py.pid"
echo "$*" > "$FAKE_DIR/args"
env > "$FAKE_DIR/env"
case "$FAKE_MODE" in
  exit0) exit 0 ;;
  exit75) exit 75 ;;
esac
while true; do sleep 0.05; done
"""
FAKE_SRUN = """#!/bin/bash
echo "$*" > "$FAKE_DIR/srun"
while [[ "$1" == -* ]]; do shift; done
exec "$@"
"""
FAKE_SCANCEL = """#!/bin/bash
echo "$*" >> "$FAKE_DIR/scancel"
kill -TERM "$(cat "$FAKE_DIR/py.pid")"
"""
FAKE_SCONTROL = """#!/bin/bash
echo "$*" >> "$FAKE_DIR/scontrol"
"""


def make_fake_cluster(tmp_path):
  repo = tmp_path / "repo"
  (repo / "experiments").mkdir(parents=True)
  (repo / "experiments" / "clip_shapes.py").write_text("")
  write_exec(str(repo / ".venv" / "bin" / "python"), FAKE_SLURM_PYTHON)
  for name, text in (("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL), ("scontrol", FAKE_SCONTROL)):
    write_exec(str(tmp_path / "bin" / name), text)
  return repo


def sbatch_body(lines: list[str]) -> str:
  start = next(i for i, l in enumerate(lines) if l.startswith("cat > "))
  end = lines.index("MMJAX_SBATCH_EOF")
  return "\n".join(lines[start + 1:end]) + "\n"


def start_job(tmp_path, repo, mode, *extra, env=None):
  lines = dry(SLURM, "--nodes", "2", "--time", "1:00:00", "--config", "experiments/clip_shapes.py", "--workdir",
              "/shared/runs/x", "--repo-dir", str(repo), *extra)
  (tmp_path / "job.sbatch").write_text(sbatch_body(lines))
  full_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  full_env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_ID="4242", FAKE_DIR=str(tmp_path),
                  FAKE_MODE=mode, **(env or {}))
  return subprocess.Popen(["bash", str(tmp_path / "job.sbatch")], env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_sbatch_script_at_the_time_limit_stops_mmjax_and_requeues(tmp_path):
  repo = make_fake_cluster(tmp_path)
  job = start_job(tmp_path, repo, "wait")
  try:
    assert wait_until(lambda: (tmp_path / "py.pid").exists())
    job.send_signal(signal.SIGUSR1)                     # what SLURM's --signal=B:USR1@300 does
    out, err = job.communicate(timeout=20)
  finally:
    job.kill()
  assert job.returncode == 75, err
  assert (tmp_path / "scancel").read_text() == "--signal=TERM 4242\n"
  assert (tmp_path / "scontrol").read_text() == "requeue 4242\n"
  assert "requeueing job 4242" in out and out.rstrip().endswith("mmjax-slurm: exit status 75")


def test_sbatch_script_does_not_requeue_a_stop_it_did_not_ask_for(tmp_path):
  repo = make_fake_cluster(tmp_path)
  job = start_job(tmp_path, repo, "exit75")            # e.g. scancel or preemption SIGTERMed mmjax directly
  out, err = job.communicate(timeout=20)
  assert job.returncode == 75 and not (tmp_path / "scontrol").exists() and not (tmp_path / "scancel").exists()


def test_sbatch_script_environment_and_command(tmp_path):
  repo = make_fake_cluster(tmp_path)
  job = start_job(tmp_path, repo, "exit0", "--extra", "batch_size=32", env={"XLA_FLAGS": "--xla_dump_to=/tmp/d"})
  out, err = job.communicate(timeout=20)
  assert job.returncode == 0 and not (tmp_path / "scontrol").exists(), err
  env = dict(l.split("=", 1) for l in (tmp_path / "env").read_text().splitlines() if "=" in l)
  assert env["XLA_FLAGS"] == XLA + " --xla_dump_to=/tmp/d"          # the user's own flags kept, last
  assert env["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"
  assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.90"
  assert (tmp_path / "srun").read_text().startswith("--ntasks-per-node=1 --cpus-per-task=64 .venv/bin/python ")
  assert (tmp_path / "args").read_text() == ("-m mmjax.main --config experiments/clip_shapes.py --workdir "
                                             "/shared/runs/x --distributed=auto --config.batch_size=32\n")


def test_sbatch_xla_flags_exist_in_the_installed_jaxlib():
  """jaxlib parses XLA_FLAGS at start-up and aborts on a flag it does not know (also GPU flags on a CPU jaxlib);
  the second run, with a flag XLA has removed, shows that this check can fail."""
  lines = dry(SLURM, *S)
  exported = next(l for l in lines if l.startswith("export XLA_FLAGS="))
  flags = exported.split('"')[1].split("${")[0]
  assert flags == XLA
  code = "import jax; jax.numpy.zeros(2).block_until_ready()"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", code], env=dict(env, XLA_FLAGS=f), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
           for f in (flags, "--xla_gpu_enable_async_all_gather=true")]
  (out0, err0), (out1, err1) = [p.communicate(timeout=120) for p in procs]
  assert procs[0].returncode == 0, err0[-2000:]
  assert procs[1].returncode != 0 and "xla_gpu_enable_async_all_gather" in err1
