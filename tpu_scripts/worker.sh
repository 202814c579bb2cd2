#!/usr/bin/env bash
# Runs ON a TPU VM worker, from the root of the mmjax checkout there; tpu_vm.py calls it on every worker through
# `gcloud compute tpus tpu-vm ssh --worker=all --command=...`. Kept in a file (not inlined into the ssh command) so
# that the printed commands stay readable and this logic can be tested locally (tests/test_tpu_scripts.py).
#
#   bash tpu_scripts/worker.sh install PYTHON      python3.X (+venv) and make via apt if missing, `make install`,
#                                                  then jax[tpu] (libtpu) into .venv, pinned by constraints.txt
#   bash tpu_scripts/worker.sh mount BUCKET        gcsfuse (installed via apt if missing) mounts gs://BUCKET at
#                                                  /mnt/gcs/BUCKET
#   bash tpu_scripts/worker.sh start LOG CMD...    CMD detached from the ssh session (nohup + setsid), output
#                                                  appended to LOG, pid in LOG's .pid; refuses if one runs already
#   bash tpu_scripts/worker.sh stop LOG            SIGTERM to the process of LOG's .pid (mmjax checkpoints, exits 75)
set -u

die() { echo "$(hostname): worker.sh: $*" >&2; exit 1; }
pidfile() { echo "${1%.log}.pid"; }
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
apt_install() {
  sudo apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@"
}

cmd_install() {
  local py=${1:?usage: worker.sh install PYTHON}
  if ! command -v "$py" >/dev/null 2>&1 || ! "$py" -c 'import ensurepip' >/dev/null 2>&1 ||
     ! command -v make >/dev/null 2>&1; then
    case "$py" in
      python3.*) apt_install "$py" "$py-venv" make || die "could not install $py, $py-venv and make with apt" ;;
      *) die "$py (with its venv module) or make is missing; install them or pass --python python3.11" ;;
    esac
  fi
  make install PYTHON="$py" || die "make install failed"
  .venv/bin/pip install -q -c constraints.txt "jax[tpu]" || die "pip install jax[tpu] failed"
  echo "$(hostname): installed $(.venv/bin/python -c 'import importlib.metadata as m; print("jax", m.version("jax"), "libtpu", m.version("libtpu"))')"
}

cmd_mount() {
  local bucket=${1:?usage: worker.sh mount BUCKET} dir
  dir=/mnt/gcs/$bucket
  if ! command -v gcsfuse >/dev/null 2>&1; then
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
      sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null &&
      echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main" |
      sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null &&
      apt_install gcsfuse || die "could not install gcsfuse"
  fi
  if mountpoint -q "$dir"; then echo "$(hostname): gs://$bucket already mounted at $dir"; return 0; fi
  sudo mkdir -p "$dir" && sudo chown "$(id -u):$(id -g)" "$dir" || die "cannot create $dir"
  # --implicit-dirs: see folders written by other tools in flat buckets; --rename-dir-limit: orbax commits a
  # checkpoint by renaming its temporary folder (atomic on hierarchical-namespace buckets, copy+delete otherwise).
  gcsfuse --implicit-dirs --rename-dir-limit=200000 "$bucket" "$dir" || die "gcsfuse could not mount gs://$bucket"
  echo "$(hostname): mounted gs://$bucket at $dir"
}

cmd_start() {
  local log=${1:?usage: worker.sh start LOG CMD...} pidf size i
  shift
  [ $# -gt 0 ] || die "start needs a command"
  pidf=$(pidfile "$log")
  mkdir -p "$(dirname "$log")" || die "cannot create the folder of $log"
  if running "$pidf"; then die "already running (pid $(cat "$pidf"), log $log); stop it first"; fi
  rm -f "$pidf"
  size=$(stat -c %s "$log" 2>/dev/null || echo 0)
  nohup setsid bash "$0" _run "$log" "$@" >>"$log" 2>&1 </dev/null &
  # Watch it for half a second (longer until its pid file appears, at most 10 s) to catch an immediate failure
  # (a missing .venv, a typo in the command).
  for i in $(seq 1 100); do
    sleep 0.1
    if tail -c +$((size + 1)) "$log" | grep -q '^=== .*: exit status '; then
      tail -c +$((size + 1)) "$log" | tail -n 5 >&2
      die "the command exited at once; see $PWD/$log"
    fi
    [ "$i" -ge 5 ] && [ -f "$pidf" ] && break
  done
  running "$pidf" || die "the command did not start; see $PWD/$log"
  echo "$(hostname): started pid $(cat "$pidf"), log $PWD/$log"
}

cmd__run() {   # the detached part: runs the command, records its pid and its exit status
  local log=$1 pidf rc pid
  shift
  pidf=$(pidfile "$log")
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname): $*"
  "$@" &
  pid=$!
  echo "$pid" >"$pidf"
  wait "$pid"
  rc=$?
  rm -f "$pidf"
  if [ "$rc" -eq 75 ]; then
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname): exit status 75 (stopped by a signal after a checkpoint; rerun the same launch to resume)"
  else
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname): exit status $rc"
  fi
  exit "$rc"
}

cmd_stop() {
  local log=${1:?usage: worker.sh stop LOG} pidf pid
  pidf=$(pidfile "$log")
  if running "$pidf"; then
    pid=$(cat "$pidf")
    kill -TERM "$pid" && echo "$(hostname): sent SIGTERM to pid $pid; it checkpoints and exits 75 (see $PWD/$log)"
  else
    echo "$(hostname): nothing running for $log"
  fi
}

sub=${1:-}
shift || true
case "$sub" in
  install | mount | start | stop | _run) "cmd_$sub" "$@" ;;
  *) die "usage: worker.sh install|mount|start|stop ... (got '${sub}')" ;;
esac
