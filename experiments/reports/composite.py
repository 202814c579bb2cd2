"""Composite objectives on the shapes data -> experiments/tables/composite.md (section "shapes").

  .venv/bin/python experiments/reports/composite.py [--steps 400] [--batch_size 64] [--seeds 0,1,2]
  .venv/bin/python experiments/reports/composite.py --runlocal --seeds 0 --table /tmp/t.md      (a smoke test)

Trains CLIP (experiments/clip_shapes.py), CoCa (coca_shapes.py: clip+caption), SLIP (slip_shapes.py: clip+simclr),
FLIP (flip_shapes.py: patch dropout 0.5) and CLIP+MAE (clip_mae_shapes.py) from scratch with the one training loop
(`loop.Trainer.train`), every run the same data, batch and schedule but its objective, and evaluates with the
configs' own evaluators (zero-shot shape / colour / shape+colour, image<->text retrieval R@1/5/10 on 1,000 held-out
images; CoCa's greedy captions, CIDEr-D):
- equal steps: every method `--steps` steps, each seed of `--seeds` (mean ± std over the seeds);
- equal wall time: seed 0 of every method again with the steps it makes in CLIP's training time (from the
  methods' measured steps/s in the equal-steps runs; steps/s excludes evaluation and checkpoints).
Wall times are of this machine's shared CPU; the ratios between methods are the comparable figure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments.reports.sections import write_section  # noqa: E402
from mmjax import config as config_lib  # noqa: E402
from mmjax.train import loop  # noqa: E402

TABLE = os.path.join(ROOT, "experiments", "tables", "composite.md")
METHODS = {"CLIP": "clip_shapes.py", "CoCa (clip+caption)": "coca_shapes.py", "SLIP (clip+simclr)": "slip_shapes.py",
           "FLIP (patch dropout 0.5)": "flip_shapes.py", "CLIP+MAE": "clip_mae_shapes.py"}
COLUMNS = (("zero_shot/shape", "zero-shot shape"), ("zero_shot/colour", "colour"),
           ("zero_shot/shape_colour", "shape+colour"), ("retrieval/i2t_R@1", "I->T R@1"),
           ("retrieval/i2t_R@5", "R@5"), ("retrieval/i2t_R@10", "R@10"), ("retrieval/t2i_R@1", "T->I R@1"),
           ("retrieval/t2i_R@5", "R@5"), ("retrieval/t2i_R@10", "R@10"), ("captioning/cider", "CIDEr-D"))


def run_one(method: str, seed: int, steps: int, batch_size: int, workdir: str, runlocal: bool) -> dict:
  """Trains one method from scratch -> {"eval": its final evaluation, "steps_per_s", "steps"}."""
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", METHODS[method]),
                                      "runlocal" if runlocal else None)
  config.seed, config.total_steps, config.batch_size = seed, steps, batch_size
  config.optim.warmup_steps = min(int(config.optim.warmup_steps), max(steps // 10, 1))
  config.checkpoint_every, config.progress_bar = steps, False
  shutil.rmtree(workdir, ignore_errors=True)
  final = loop.Trainer(config, workdir).train()
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if line.strip()]
  rates = [r["train/steps_per_s"] for r in rows if "train/steps_per_s" in r]
  # The first flush includes the compile: the steps/s of the later ones are the steady state.
  sps = float(np.median(rates[1:] if len(rates) > 1 else rates))
  return {"eval": {k: float(v) for k, v in final.items()}, "steps_per_s": sps, "steps": steps}


def cell(values: list[float], percent: bool) -> str:
  if not values:
    return "–"
  digits = 1 if percent else 2
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def table(results: dict[str, list[dict]]) -> list[str]:
  head = "| method | steps | steps/s | " + " | ".join(c[1] for c in COLUMNS) + " |"
  lines = [head, "|---" * (len(COLUMNS) + 3) + "|"]
  for method, runs in results.items():
    cells = []
    for key, _ in COLUMNS:
      vals = [r["eval"][key] for r in runs if key in r["eval"]]
      cells.append(cell(vals, percent=not key.startswith("captioning/")))
    sps = np.mean([r["steps_per_s"] for r in runs])
    lines.append(f"| {method} | {runs[0]['steps']} | {sps:.2f} | " + " | ".join(cells) + " |")
  return lines


def verdicts(results: dict[str, list[dict]]) -> list[str]:
  """Each method against CLIP on the mean of its seeds: a difference counts when it exceeds both stds summed."""
  base = results["CLIP"]
  out = []
  for method, runs in results.items():
    if method == "CLIP":
      continue
    better, worse = [], []
    for key, _ in COLUMNS:
      if key.startswith("captioning/"):
        continue
      a = [r["eval"][key] for r in runs if key in r["eval"]]
      b = [r["eval"][key] for r in base if key in r["eval"]]
      if not a or not b:
        continue
      diff, noise = np.mean(a) - np.mean(b), np.std(a) + np.std(b)
      if abs(diff) > max(noise, 1e-9) and len(a) > 1:
        (better if diff > 0 else worse).append(f"{key.split('/')[1]} {diff:+.1f}")
    summary = ("helps on " + ", ".join(better) if better else "") + ("; " if better and worse else "") + \
              ("hurts on " + ", ".join(worse) if worse else "")
    out.append(f"- {method} vs CLIP at equal steps: {summary or 'no difference beyond the seed spread'}.")
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=400)
  ap.add_argument("--batch_size", type=int, default=64)
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from: " + ", ".join(METHODS))
  ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "composite"))
  ap.add_argument("--table", default=TABLE)
  ap.add_argument("--runlocal", action="store_true", help="the configs' runlocal variants (a smoke test)")
  ap.add_argument("--no_equal_wall", action="store_true", help="skip the equal-wall-time runs")
  args = ap.parse_args()
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  unknown = [m for m in methods if m not in METHODS]
  if unknown or "CLIP" not in methods:
    ap.error(f"--methods must include CLIP and come from {', '.join(METHODS)} "
             f"(got {', '.join(unknown) or args.methods})")
  seeds = [int(s) for s in args.seeds.split(",")]
  command = " ".join([".venv/bin/python experiments/reports/composite.py", *sys.argv[1:]])
  slug = lambda m: m.split(" ")[0].lower().replace("+", "_")   # noqa: E731
  t0 = time.time()
  steps_res: dict[str, list[dict]] = {}
  for m in methods:
    for s in seeds:
      r = run_one(m, s, args.steps, args.batch_size, os.path.join(args.workdir, f"{slug(m)}_s{s}"), args.runlocal)
      steps_res.setdefault(m, []).append(r)
      print(f"{m} seed {s}: {r['eval']} ({r['steps_per_s']:.2f} steps/s)", flush=True)
  wall_res: dict[str, list[dict]] = {}
  clip_sps = np.mean([r["steps_per_s"] for r in steps_res["CLIP"]])
  if not args.no_equal_wall:
    for m in methods:
      if m == "CLIP":
        wall_res[m] = steps_res[m][:1]
        continue
      steps = max(1, round(args.steps * np.mean([r["steps_per_s"] for r in steps_res[m]]) / clip_sps))
      r = run_one(m, seeds[0], steps, args.batch_size, os.path.join(args.workdir, f"{slug(m)}_wall"), args.runlocal)
      wall_res[m] = [r]
      print(f"{m} equal wall ({steps} steps): {r['eval']}", flush=True)
  base = config_lib.load_experiment(os.path.join(ROOT, "experiments", "clip_shapes.py"),
                                    "runlocal" if args.runlocal else None)
  n_eval = int(base.evals.num_examples)
  lines = [f"{jax.device_count()} {jax.devices()[0].platform.upper()} device(s), {(time.time() - t0) / 60:.1f} min "
           f"in all. Every run: batch {args.batch_size}, the configs' optimiser (AdamW, lr {base.optim.lr:g}, "
           f"cosine, weight decay {base.optim.weight_decay:g}), image tower ViT {base.model.vision.width}w x "
           f"{base.model.vision.depth}/{base.model.vision.patch_size} at {base.data.image_size} px, captions "
           f"naming colour, shape, size and position. Evaluated on the first {n_eval} `test` images (one object "
           f"each): zero-shot top-1 in % (chance: shape 16.7, colour 12.5, shape+colour 2.1), retrieval recall in "
           f"% (I->T: an image's own caption among the {n_eval} captions), CoCa's CIDEr-D of its greedy caption "
           f"against the image's caption.", "",
           f"## Equal steps ({args.steps} steps, seeds {args.seeds}: mean ± std)", "", *table(steps_res),
           "", *verdicts(steps_res), ""]
  if wall_res:
    lines += [f"## Equal wall time (CLIP's {args.steps} steps at {clip_sps:.2f} steps/s; seed {seeds[0]}; each "
              f"method's steps = {args.steps} x its steps/s / CLIP's)", "",
              "One seed per method: read it against the equal-steps seed spread above.", "",
              *table(wall_res), ""]
  write_section(args.table, "shapes", "\n".join(lines), command, title="Composite objectives")
  print(f"wrote the shapes section of {args.table}")


if __name__ == "__main__":
  main()
