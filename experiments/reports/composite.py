"""Composite objectives -> experiments/tables/composite.md (sections "shapes" and "flickr8k").

  .venv/bin/python experiments/reports/composite.py [--steps 500] [--batch_size 64] [--seeds 0,1,2]
  .venv/bin/python experiments/reports/composite.py --data flickr8k --steps 600 --seeds 0
  .venv/bin/python experiments/reports/composite.py --runlocal --seeds 0 --table /tmp/t.md      (a smoke test)

Trains CLIP, CoCa (clip+caption), SLIP (clip+simclr), FLIP (patch dropout 0.5) and CLIP+MAE from scratch with the
one training loop (`loop.Trainer.train`), every run the same data, batch and schedule but its objective, and
evaluates with the configs' own evaluators. Shapes: experiments/clip_shapes.py, coca_shapes.py, slip_shapes.py,
flip_shapes.py, clip_mae_shapes.py (zero-shot shape / colour / shape+colour, image<->text retrieval R@1/5/10 on
1,000 held-out images; CoCa's greedy captions, CIDEr-D). Flickr8k: experiments/composite_flickr8k.py:<method>
(retrieval on the 1k test images and their 5k captions, zero-shot CIFAR-10, CoCa's CIDEr-D against 5 references):
- equal steps: every method `--steps` steps, each seed of `--seeds` (mean ± std over the seeds);
- equal wall time: every seed of every method again with the steps it makes in CLIP's training time (from the
  methods' measured steps/s in the equal-steps runs; steps/s excludes evaluation and checkpoints); `--wall_seeds`
  runs it for fewer seeds.
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
NAMES = ("CLIP", "CoCa (clip+caption)", "SLIP (clip+simclr)", "FLIP (patch dropout 0.5)", "CLIP+MAE")
# data set -> method -> (config file, config argument)
CONFIGS = {"shapes": dict(zip(NAMES, [(f, None) for f in ("clip_shapes.py", "coca_shapes.py", "slip_shapes.py",
                                                           "flip_shapes.py", "clip_mae_shapes.py")])),
           "flickr8k": dict(zip(NAMES, [("composite_flickr8k.py", m) for m in
                                        ("clip", "coca", "slip", "flip", "clip_mae")]))}
RETRIEVAL = (("retrieval/i2t_R@1", "I->T R@1"), ("retrieval/i2t_R@5", "R@5"), ("retrieval/i2t_R@10", "R@10"),
             ("retrieval/t2i_R@1", "T->I R@1"), ("retrieval/t2i_R@5", "R@5"), ("retrieval/t2i_R@10", "R@10"))
COLUMNS = {"shapes": (("zero_shot/shape", "zero-shot shape"), ("zero_shot/colour", "colour"),
                      ("zero_shot/shape_colour", "shape+colour"), *RETRIEVAL, ("captioning/cider", "CIDEr-D")),
           "flickr8k": (*RETRIEVAL, ("zero_shot/cifar10_test", "zero-shot CIFAR-10"), ("captioning/cider", "CIDEr-D"))}


def load_config(data: str, method: str, runlocal: bool):
  path, arg = CONFIGS[data][method]
  arg = ",".join(a for a in (arg, "runlocal" if runlocal else None) if a)
  return config_lib.load_experiment(os.path.join(ROOT, "experiments", path), arg or None)


def run_one(data: str, method: str, seed: int, steps: int, batch_size: int, workdir: str, runlocal: bool) -> dict:
  """Trains one method from scratch -> {"eval": its final evaluation, "steps_per_s", "steps"}."""
  config = load_config(data, method, runlocal)
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


def table(results: dict[str, list[dict]], columns) -> list[str]:
  head = "| method | steps | steps/s | " + " | ".join(c[1] for c in columns) + " |"
  lines = [head, "|---" * (len(columns) + 3) + "|"]
  for method, runs in results.items():
    cells = []
    for key, _ in columns:
      vals = [r["eval"][key] for r in runs if key in r["eval"]]
      cells.append(cell(vals, percent=not key.startswith("captioning/")))
    sps = np.mean([r["steps_per_s"] for r in runs])
    lines.append(f"| {method} | {runs[0]['steps']} | {sps:.2f} | " + " | ".join(cells) + " |")
  return lines


def verdicts(results: dict[str, list[dict]], columns, what: str) -> list[str]:
  """Each method against CLIP on the mean of its seeds: a difference counts when it exceeds both stds summed
  (never with one seed: there is no spread to read it against)."""
  base = results["CLIP"]
  out = []
  for method, runs in results.items():
    if method == "CLIP":
      continue
    better, worse = [], []
    for key, _ in columns:
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
    out.append(f"- {method} vs CLIP at {what}: {summary or 'no difference beyond the seed spread'}.")
  return out


def describe(data: str, base, batch_size: int) -> str:
  """The section's first paragraph: what every run shares and what the columns mean."""
  v, n_eval = base.model.vision, int(base.evals.num_examples)
  shared = (f"Every run: batch {batch_size}, the configs' optimiser (AdamW, lr {base.optim.lr:g}, cosine, weight "
            f"decay {base.optim.weight_decay:g}), image tower ViT {v.width}w x {v.depth}/{v.patch_size} at "
            f"{base.data.image_size} px, text tower {base.model.text.width}w x {base.model.text.depth}")
  if data == "shapes":
    return (f"{shared}, captions naming colour, shape, size and position. Evaluated on the first {n_eval} `test` "
            f"images (one object each): zero-shot top-1 in % (chance: shape 16.7, colour 12.5, shape+colour 2.1), "
            f"retrieval recall in % (I->T: an image's own caption among the {n_eval} captions), CoCa's CIDEr-D of "
            f"its greedy caption against the image's caption.")
  return (f"{shared}; Flickr8k's 6,000 training images x 5 captions, random-resized crops. Evaluated on the "
          f"{n_eval} `test` images: retrieval recall in % (I->T: any of an image's 5 captions among the "
          f"{5 * n_eval}; T->I: a caption's image among the {n_eval}), zero-shot CIFAR-10 top-1 in % on its test "
          f"split (CLIP's 18 templates, chance 10), CoCa's CIDEr-D of its greedy caption against the 5 references.")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", default="shapes", choices=sorted(CONFIGS))
  ap.add_argument("--steps", type=int, default=500)
  ap.add_argument("--batch_size", type=int, default=64)
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--wall_seeds", default=None, help="seeds of the equal-wall-time runs (default: --seeds)")
  ap.add_argument("--methods", default=",".join(NAMES), help="comma-separated, from: " + ", ".join(NAMES))
  ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "composite"))
  ap.add_argument("--table", default=TABLE)
  ap.add_argument("--runlocal", action="store_true", help="the configs' runlocal variants (a smoke test)")
  ap.add_argument("--no_equal_wall", action="store_true", help="skip the equal-wall-time runs")
  args = ap.parse_args()
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  unknown = [m for m in methods if m not in NAMES]
  if unknown or "CLIP" not in methods:
    ap.error(f"--methods must include CLIP and come from {', '.join(NAMES)} "
             f"(got {', '.join(unknown) or args.methods})")
  seeds = [int(s) for s in args.seeds.split(",")]
  wall_seeds = seeds if args.wall_seeds is None else [int(s) for s in args.wall_seeds.split(",")]
  columns = COLUMNS[args.data]
  command = " ".join([".venv/bin/python experiments/reports/composite.py", *sys.argv[1:]])
  slug = lambda m: f"{args.data}_" + m.split(" ")[0].lower().replace("+", "_")   # noqa: E731
  run = lambda m, s, steps, name: run_one(args.data, m, s, steps, args.batch_size,   # noqa: E731
                                          os.path.join(args.workdir, name), args.runlocal)
  t0 = time.time()
  steps_res: dict[str, list[dict]] = {}
  for m in methods:
    for s in seeds:
      r = run(m, s, args.steps, f"{slug(m)}_s{s}")
      steps_res.setdefault(m, []).append(r)
      print(f"{m} seed {s}: {r['eval']} ({r['steps_per_s']:.2f} steps/s)", flush=True)
  wall_res: dict[str, list[dict]] = {}
  clip_sps = np.mean([r["steps_per_s"] for r in steps_res["CLIP"]])
  if not args.no_equal_wall:
    for m in methods:
      if m == "CLIP":
        wall_res[m] = [r for s, r in zip(seeds, steps_res[m]) if s in wall_seeds]
        continue
      steps = max(1, round(args.steps * np.mean([r["steps_per_s"] for r in steps_res[m]]) / clip_sps))
      for s in wall_seeds:
        r = run(m, s, steps, f"{slug(m)}_wall_s{s}")
        wall_res.setdefault(m, []).append(r)
        print(f"{m} equal wall ({steps} steps) seed {s}: {r['eval']}", flush=True)
  base = load_config(args.data, "CLIP", args.runlocal)
  lines = [f"{jax.device_count()} {jax.devices()[0].platform.upper()} device(s), {(time.time() - t0) / 60:.1f} min "
           f"in all. " + describe(args.data, base, args.batch_size), "",
           f"## Equal steps ({args.steps} steps, seeds {args.seeds}" + (": mean ± std)" if len(seeds) > 1 else ")"),
           "", *table(steps_res, columns), ""]
  if len(seeds) > 1:
    lines += [*verdicts(steps_res, columns, "equal steps"), ""]
  if wall_res:
    ws = ",".join(map(str, wall_seeds))
    lines += [f"## Equal wall time (CLIP's {args.steps} steps at {clip_sps:.2f} steps/s; seeds {ws}; each "
              f"method's steps = {args.steps} x its steps/s / CLIP's)", "", *table(wall_res, columns), ""]
    if len(wall_seeds) > 1:
      lines += [*verdicts(wall_res, columns, "equal wall time"), ""]
    else:
      lines += ["One seed per method: " + ("read it against the equal-steps seed spread." if len(seeds) > 1 else
                "no seed spread was measured on this data, so a difference of a point or two of recall may be "
                "noise."), ""]
  write_section(args.table, args.data, "\n".join(lines), command, title="Composite objectives")
  print(f"wrote the {args.data} section of {args.table}")


if __name__ == "__main__":
  main()
