"""Peak host memory and time of naive vs sharded CLIP / SigLIP loss + gradients at a large global batch.

  python benchmarks/contrastive_memory.py [--batches 4096,16384,32768] [--methods all] [--chunk_size 1024]
                                          [--timeout 300] [--max_rss_gib 12]

What is measured: the jitted `jax.value_and_grad` (w.r.t. zimg, ztxt, logit_scale and, for SigLIP, logit_bias) of
  clip_naive    mmjax.objectives.contrastive.clip_loss           (full [B, B] logits)
  clip_chunked  mmjax.objectives.contrastive_sharded.chunked_clip_loss(chunk_size=--chunk_size) (all-gather)
  clip_ring     mmjax.objectives.contrastive_sharded.ring_clip_loss(chunk_size=--chunk_size) (custom VJP)
  siglip_naive  mmjax.objectives.contrastive.siglip_loss         (full [B, B] logits)
  siglip_ring   mmjax.objectives.contrastive_sharded.ring_siglip_loss(chunk_size=--chunk_size) (custom VJP)
at global batch B, embedding dim d = 512, float32, on 8 simulated CPU devices (XLA_FLAGS=
--xla_force_host_platform_device_count=8) with the mesh make_mesh({"data": -1, "fsdp": 1}). The inputs are random
L2-normalised [B, 512] rows made inside a jitted function whose out_shardings are NamedSharding(P(("data", "fsdp"))),
so no host copy of B x d is made. Time: compile once, run once, then the best of --repeats runs (block_until_ready).

Each (method, batch) runs in its own subprocess (this script re-invoked with `--one method=... batch=...`) so its
peak RSS belongs to that measurement alone. Reported: peak_rss_mib = getrusage(RUSAGE_SELF).ru_maxrss of the child,
and rss_over_baseline_mib = that minus the child's RSS right after importing jax and initialising the 8 devices.
All 8 simulated devices share the one host, so host RSS is the sum over devices: the sharded methods' per-device
live logits are [B/8, chunk], the naive ones are B x B in total.
The parent polls the child's VmRSS (/proc/<pid>/status) every 0.2 s and kills it past --max_rss_gib
("error": "killed: RSS over N GiB"); RLIMIT_AS is not used because it breaks XLA's virtual-memory reservations.
A child that fails, times out or is killed gives a line with "error".

Output: one JSON line per measurement, then one summary line {"summary": {method: largest batch it ran}}.

Goal (from the issue): B = 65,536 should fit under 2 GiB peak with the sharded losses, where the naive ones need
~17 GiB -- the naive B x B float32 logits alone are 65,536^2 x 4 B = 16 GiB, so naive at 65,536 cannot be run on this
24 GiB shared machine under the 12 GiB kill limit (32,768 naive already needs 4 GiB of logits plus their gradients).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("clip_naive", "clip_chunked", "clip_ring", "siglip_naive", "siglip_ring")
DIM = 512
DEVICES = 8


def _rss_mib_now() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


def run_one(method: str, batch: int, chunk_size: int, repeats: int = 3) -> dict:
  """Child: one measurement. XLA_FLAGS is set by the parent before jax is imported here."""
  sys.path.insert(0, ROOT)
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P

  from mmjax.objectives.contrastive import clip_loss, siglip_loss
  from mmjax.objectives.contrastive_sharded import chunked_clip_loss, ring_clip_loss, ring_siglip_loss
  from mmjax.train.sharding import make_mesh

  devices = jax.devices()
  mesh = make_mesh({"data": -1, "fsdp": 1})
  baseline = _rss_mib_now()
  axes = ("data", "fsdp")
  row = NamedSharding(mesh, P(axes))

  def make_inputs(key):
    k1, k2 = jax.random.split(key)
    zi = jax.random.normal(k1, (batch, DIM), jnp.float32)
    zt = zi + 0.5 * jax.random.normal(k2, (batch, DIM), jnp.float32)   # correlated pairs: a non-trivial loss
    zi = zi / jnp.linalg.norm(zi, axis=1, keepdims=True)
    zt = zt / jnp.linalg.norm(zt, axis=1, keepdims=True)
    return zi, zt

  make_inputs = jax.jit(make_inputs, out_shardings=(row, row))
  zimg, ztxt = make_inputs(jax.random.PRNGKey(0))
  scale = jnp.asarray(jnp.log(10.0), jnp.float32)
  bias = jnp.asarray(-10.0, jnp.float32)

  if method == "clip_naive":
    fn = lambda zi, zt, t: clip_loss(zi, zt, t)[0]
    args = (zimg, ztxt, scale)
  elif method == "clip_chunked":
    fn = lambda zi, zt, t: chunked_clip_loss(zi, zt, t, mesh=mesh, chunk_size=chunk_size)[0]
    args = (zimg, ztxt, scale)
  elif method == "clip_ring":
    fn = lambda zi, zt, t: ring_clip_loss(zi, zt, t, mesh=mesh, chunk_size=chunk_size)[0]
    args = (zimg, ztxt, scale)
  elif method == "siglip_naive":
    fn = lambda zi, zt, t, b: siglip_loss(zi, zt, t, b)[0]
    args = (zimg, ztxt, scale, bias)
  elif method == "siglip_ring":
    fn = lambda zi, zt, t, b: ring_siglip_loss(zi, zt, t, b, mesh=mesh, chunk_size=chunk_size)[0]
    args = (zimg, ztxt, scale, bias)
  else:
    raise ValueError(f"unknown method {method!r}; valid: {METHODS}")

  step = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(args)))))
  compiled = step.lower(*args).compile()
  t0 = time.perf_counter()
  out = compiled(*args)
  jax.block_until_ready(out)
  best = time.perf_counter() - t0 if repeats == 0 else float("inf")   # --repeats 0: the first run's time
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    best = min(best, time.perf_counter() - t0)
  loss = float(out[0])
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0          # KiB on Linux
  stats = devices[0].memory_stats() or {}                                     # accelerators: device memory
  return {"method": method, "batch": batch, "dim": DIM, "devices": len(devices),
          **({"chunk_size": chunk_size} if method not in ("clip_naive", "siglip_naive") else {}),
          "peak_rss_mib": round(peak, 1), "baseline_rss_mib": round(baseline, 1),
          "rss_over_baseline_mib": round(peak - baseline, 1), "ms": round(best * 1e3, 2),
          "loss": round(loss, 6), "backend": jax.default_backend(),
          **({"device_peak_mib": round(stats["peak_bytes_in_use"] / 2**20, 1)} if "peak_bytes_in_use" in stats else {})}


def _vmrss_kib(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1])
  except OSError:
    pass
  return 0


def spawn(method: str, batch: int, args) -> dict:
  """Parent: runs one child, polling its RSS; -> its JSON result or an error line."""
  env = dict(os.environ)
  if args.backend == "cpu":   # 8 simulated devices on the host; "native": the machine's own devices (a GPU/TPU)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}").strip()
    env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, os.path.abspath(__file__), "--one", f"method={method}", f"batch={batch}",
         "--chunk_size", str(args.chunk_size), "--repeats", str(args.repeats)]
  base = {"method": method, "batch": batch, "dim": DIM, "devices": DEVICES}
  limit_kib = int(args.max_rss_gib * 1024 * 1024)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  t0, max_seen, error = time.monotonic(), 0, None
  while proc.poll() is None:
    rss = _vmrss_kib(proc.pid)
    max_seen = max(max_seen, rss)
    if rss > limit_kib:
      error = f"killed: RSS over {args.max_rss_gib:g} GiB"
    elif time.monotonic() - t0 > args.timeout:
      error = f"killed: timeout after {args.timeout} s"
    if error:
      os.killpg(proc.pid, signal.SIGKILL)
      break
    time.sleep(0.2)
  stdout, stderr = proc.communicate()
  if error:
    return {**base, "error": error, "max_polled_rss_mib": round(max_seen / 1024.0, 1)}
  for line in reversed(stdout.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
  return {**base, "error": f"exit {proc.returncode}: {tail[-300:]}",
          "max_polled_rss_mib": round(max_seen / 1024.0, 1)}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batches", default="4096,16384,32768")
  ap.add_argument("--methods", default="all", help=f"'all' or a comma list of {METHODS}")
  ap.add_argument("--chunk_size", type=int, default=1024, help="column chunk of the sharded methods")
  ap.add_argument("--repeats", type=int, default=3, help="timed runs after the first (best is reported)")
  ap.add_argument("--timeout", type=float, default=300.0, help="seconds per child")
  ap.add_argument("--max_rss_gib", type=float, default=12.0, help="kill a child whose RSS exceeds this")
  ap.add_argument("--backend", choices=("cpu", "native"), default="cpu",
                  help="cpu: 8 simulated host devices (RSS is the memory); native: the machine's accelerators "
                       "(device_peak_mib from memory_stats)")
  ap.add_argument("--one", nargs=2, metavar=("method=M", "batch=B"), help=argparse.SUPPRESS)
  args = ap.parse_args()

  if args.one:
    kv = dict(a.split("=", 1) for a in args.one)
    print(json.dumps(run_one(kv["method"], int(kv["batch"]), args.chunk_size, args.repeats)), flush=True)
    return

  methods = METHODS if args.methods == "all" else tuple(m.strip() for m in args.methods.split(","))
  bad = [m for m in methods if m not in METHODS]
  if bad:
    ap.error(f"unknown methods {bad}; valid: {', '.join(METHODS)} or all")
  batches = [int(b) for b in args.batches.split(",")]
  largest = {m: None for m in methods}
  for batch in batches:
    for m in methods:
      res = spawn(m, batch, args)
      print(json.dumps(res), flush=True)
      if "error" not in res:
        largest[m] = max(largest[m] or 0, batch)
  print(json.dumps({"summary": {"largest_batch_ran": largest, "dim": DIM, "devices": DEVICES,
                                "max_rss_gib": args.max_rss_gib}}), flush=True)


if __name__ == "__main__":
  main()
