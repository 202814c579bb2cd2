"""Co-learning, generative models and reasoning (issue 9, items 3-4): sections "mvae" and "vqa" of
experiments/tables/colearning.md (written only through experiments/reports/sections.py).

  .venv/bin/python experiments/reports/colearning_generative.py --part mvae [--steps 2000]
  .venv/bin/python experiments/reports/colearning_generative.py --part vqa [--steps 1500]

Each part trains with the library's loop (`python -m mmjax.main --config ... --workdir runs/colearn_gen/...`, a
fresh workdir every time), reads the final evaluation from the run's metrics.jsonl and writes its section:
  mvae: experiments/mvae_shapes.py (MVAE, Wu & Goodman 2018) -> test -ELBO (nats) joint / image / labels vs
        a per-pixel Gaussian and the uniform-labels baselines; labels -> image judged by a CNN vs prior samples;
        image -> labels accuracy vs chance; figure figures/colearn_gen_mvae_shapes.png.
  vqa:  experiments/vqa_shapes.py:image_question vs :question_only (same steps, batch, optimiser) -> accuracy per
        question type, and the answer prior (majority answer per question type on train questions).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from experiments.reports.sections import write_section  # noqa: E402

TABLE = os.path.join(ROOT, "experiments", "tables", "colearning.md")
FIGURES = os.path.join(ROOT, "experiments", "tables", "figures")
TITLE = "Co-learning, generative models and reasoning"
RUNS = os.path.join(ROOT, "runs", "colearn_gen")


LOADS: dict[str, str] = {}   # workdir -> load average when its run ended
REUSE = False   # --reuse: rebuild the sections from the last runs' workdirs instead of training again


def train(config_arg: str, workdir: str, extra: list[str] = ()) -> tuple[dict, float]:
  """Runs the loop on a fresh workdir; returns (the last evaluation {key: value} without "eval/", seconds)."""
  timing = os.path.join(workdir, "report_seconds.json")
  if REUSE:
    if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
      raise SystemExit(f"--reuse: {workdir} holds no run; run without --reuse")
    info = json.load(open(timing)) if os.path.exists(timing) else {}
    seconds = info.get("seconds", float("nan"))
    LOADS[workdir] = info.get("load", "n/a")
  else:
    if os.path.exists(workdir):
      shutil.rmtree(workdir)
    cmd = [sys.executable, "-m", "mmjax.main", "--config", config_arg, "--workdir", workdir,
           "--config.progress_bar=False", *extra]
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    seconds = time.time() - t0
    LOADS[workdir] = load_avg()
    with open(timing, "w") as f:
      json.dump({"seconds": seconds, "command": cmd, "load": LOADS[workdir]}, f)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
  if not evals:
    raise SystemExit(f"no evaluation in {workdir}/metrics.jsonl")
  last = {k[len("eval/"):]: v for k, v in evals[-1].items() if k.startswith("eval/")}
  train_rows = [r for r in rows if "train/loss" in r]
  last["_final_train_loss"] = train_rows[-1]["train/loss"] if train_rows else float("nan")
  last["_steps"] = evals[-1]["step"]
  last["_config"] = json.load(open(os.path.join(workdir, "config.json")))
  return last, seconds


def clearly_above(p1: float, p2: float, n: int) -> bool:
  """p1 > p2 by more than two standard errors of the difference of two independent proportions over n each."""
  se = math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 1e-12) / n)
  return p1 - p2 > 2 * se


def load_avg() -> str:
  try:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())
  except OSError:
    return "n/a"


# ------------------------------------------------------------------------------------------------ MVAE
def part_mvae(args) -> None:
  workdir = os.path.join(RUNS, "mvae_shapes")
  r, secs = train(f"experiments/mvae_shapes.py:steps={args.steps}", workdir)
  m = {k[len("mvae/"):]: v for k, v in r.items() if k.startswith("mvae/")}
  cfg = r["_config"]
  mc = cfg["model"]
  os.makedirs(FIGURES, exist_ok=True)
  fig = os.path.join(FIGURES, "colearn_gen_mvae_shapes.png")
  shutil.copyfile(os.path.join(workdir, "mvae_generations.png"), fig)
  n = int(m["num_examples"])
  beats_img = m["nelbo_image"] < m["baseline_nll_image"]
  beats_joint = m["nelbo_joint"] < m["baseline_nll_image"] + m["baseline_nll_labels"]
  gen_wins = [k for k in ("shape", "colour", "both") if clearly_above(m[f"l2i_{k}_acc"], m[f"prior_{k}_acc"], n)]
  chance_wins = [k for k in ("shape", "colour", "both") if clearly_above(m[f"l2i_{k}_acc"], m[f"chance_{k}"], n)]
  i2l_wins = [a for a in ("shape", "colour", "size", "position")
              if f"i2l_{a}_acc" in m and clearly_above(m[f"i2l_{a}_acc"], m[f"chance_{a}"], n)]
  lines = [
      "### MVAE on shapes (image + labels)",
      "",
      f"MVAE (Wu & Goodman 2018; mmjax/models/mvae.py, objective `mvae`): one Gaussian expert per modality, "
      f"product-of-experts posterior including the N(0, I) prior expert, trained on the sum of the sub-sampled "
      f"ELBOs (joint + image only + labels only; label weight {mc['label_weight']:g}, beta {mc['beta']:g}"
      f"{'' if not mc.get('cross_image_weight', 0) else '; not in the paper: ELBO_labels also carries %g x log p(image | z ~ q(z | labels)), the cross-modal image term (model.cross_image_weight; 0 = paper)' % mc['cross_image_weight']}). Data: "
      f"one-object shapes scenes, 32x32 images and the labels (shape 6, colour 8, size 3, grid position 9). "
      f"{r['_steps']} steps of batch {cfg['batch_size']} (AdamW {cfg['optim']['lr']:g}, cosine), latent "
      f"{mc['latent_dim']}, conv channels {tuple(mc['channels'])}, image log-scale "
      f"{'initialised at' if mc.get('learn_image_scale', True) else 'fixed at'} {mc['image_log_scale_init']:g}. Test: {n} scenes of the test split. Run time {secs / 60:.1f} min on the "
      f"shared 2-core CPU (load average {LOADS[workdir]} at the end).",
      "",
      "**Negative ELBO on test data** (nats per example, unweighted lambda = beta = 1, mean of 4 one-sample "
      "estimates; image likelihood: a Gaussian density on pixels in [-1, 1]):",
      "",
      "| posterior | -ELBO | reconstruction NLL | KL | baseline to beat |",
      "|---|---|---|---|---|",
      f"| q(z \\| image, labels) | {m['nelbo_joint']:.1f} | image {m['nll_image_joint']:.1f} + labels "
      f"{m['nll_labels_joint']:.2f} | {m['kl_joint']:.1f} | {m['baseline_nll_image'] + m['baseline_nll_labels']:.1f} "
      f"(per-pixel Gaussian + uniform labels) |",
      f"| q(z \\| image) | {m['nelbo_image']:.1f} | {m['nll_image_image']:.1f} | {m['kl_image']:.1f} | "
      f"{m['baseline_nll_image']:.1f} (independent per-pixel Gaussians fitted on 4000 train images) |",
      f"| q(z \\| labels) | {m['nelbo_labels']:.2f} | {m['nll_labels_labels']:.2f} | {m['kl_labels']:.2f} | "
      f"{m['baseline_nll_labels']:.2f} = log(6·8·3·9): labels are uniform, so this is also the floor -ELBO can "
      f"only approach |",
      "",
      f"The image ELBO {'beats' if beats_img else 'does NOT beat'} the per-pixel Gaussian baseline "
      f"({m['nelbo_image']:.1f} vs {m['baseline_nll_image']:.1f} nats), and the joint ELBO "
      f"{'beats' if beats_joint else 'does NOT beat'} the per-pixel Gaussian + uniform labels baseline. "
      f"The labels-only -ELBO is {m['nelbo_labels'] - m['baseline_nll_labels']:.2f} nats above the entropy of "
      f"the labels (the best any model can do).",
      "",
      "**Cross-modal generation, labels -> image** (z ~ q(z | labels), decoder mean), judged by the CNN of "
      "mmjax/evals/generation.py trained on real train images; baseline: decoded prior samples z ~ N(0, I) judged "
      "against the same requested labels (an unconditional generator):",
      "",
      "| images | shape acc | colour acc | both |",
      "|---|---|---|---|",
      f"| labels -> image (MVAE) | {m['l2i_shape_acc']:.3f} | {m['l2i_colour_acc']:.3f} | {m['l2i_both_acc']:.3f} |",
      f"| prior samples (unconditional baseline) | {m['prior_shape_acc']:.3f} | {m['prior_colour_acc']:.3f} | "
      f"{m['prior_both_acc']:.3f} |",
      f"| real test images (judge's own accuracy) | {m['judge_real_shape_acc']:.3f} | "
      f"{m['judge_real_colour_acc']:.3f} | {m['judge_real_both_acc']:.3f} |",
      f"| chance | {m['chance_shape']:.3f} | {m['chance_colour']:.3f} | {m['chance_both']:.3f} |",
      "",
      f"Labels -> image clearly beats the unconditional baseline (by more than two standard errors over {n} "
      f"scenes) on: {', '.join(gen_wins) if gen_wins else 'none of shape, colour, both'}"
      f"{'' if len(gen_wins) == 3 else '; it does NOT on ' + ', '.join(k for k in ('shape', 'colour', 'both') if k not in gen_wins)}. "
      f"Against chance (1/6, 1/8, 1/48) it is clearly above on: {', '.join(chance_wins) if chance_wins else 'none'}. "
      + ("" if m["l2i_colour_acc"] >= 0.5 else
         f"The margin is small: in the figure most generated objects are still greyish blobs at the requested "
         f"position and size; in this budget the model encodes position and size far better than colour or shape "
         f"(image -> colour accuracy "
         f"{m.get('i2l_colour_acc', float('nan')):.3f}, shape {m.get('i2l_shape_acc', float('nan')):.3f}, below)."),
      "",
      "**Cross-modal inference, image -> labels** (label decoder at the mean of q(z | image)):",
      "",
      "| attribute | accuracy | chance |",
      "|---|---|---|",
      *[f"| {a} | {m[f'i2l_{a}_acc']:.3f} | {m[f'chance_{a}']:.3f} |"
        for a in ("shape", "colour", "size", "position") if f"i2l_{a}_acc" in m],
      "",
      "",
      f"Image -> labels is clearly above chance (two standard errors) on: {', '.join(i2l_wins) or 'none'}.",
      "",
      "![MVAE samples](figures/colearn_gen_mvae_shapes.png)",
  ]
  command = f".venv/bin/python experiments/reports/colearning_generative.py --part mvae --steps {args.steps}"
  command += " --reuse" if args.reuse else ""
  write_section(TABLE, "mvae", "\n".join(lines), command, title=TITLE)
  print("\n".join(lines))


# ------------------------------------------------------------------------------------------------ VQA
def part_vqa(args) -> None:
  from mmjax.data.vqa_shapes import QTYPES
  results = {}
  for variant in ("image_question", "question_only"):
    workdir = os.path.join(RUNS, f"vqa_{variant}")
    results[variant] = train(f"experiments/vqa_shapes.py:{variant},steps={args.steps}", workdir)
  (full, t_full), (qonly, t_q) = results["image_question"], results["question_only"]
  n = int(full["vqa/num_examples"])
  rows = ["| question type | share of test questions | image + question (cross-attention) | question only | "
          "answer prior (majority per type) |", "|---|---|---|---|---|"]
  for t in QTYPES:
    rows.append(f"| {t} | {full[f'vqa/frac_{t}']:.3f} | {full[f'vqa/acc_{t}']:.3f} | {qonly[f'vqa/acc_{t}']:.3f} | "
                f"{full[f'vqa/prior_acc_{t}']:.3f} |")
  rows.append(f"| **all** | 1.000 | **{full['vqa/accuracy']:.3f}** | **{qonly['vqa/accuracy']:.3f}** | "
              f"{full['vqa/prior_accuracy']:.3f} |")
  beats = [t for t in QTYPES if clearly_above(full[f"vqa/acc_{t}"], qonly[f"vqa/acc_{t}"],
                                              max(1, round(full[f"vqa/frac_{t}"] * n)))]
  lines = [
      "### VQA on shapes",
      "",
      f"Questions and answers generated from the structured labels of shapes scenes (mmjax/data/vqa_shapes.py, "
      f"dataset `vqa_shapes`; 2-4 objects per 32x32 scene; types colour, shape, count, exist, relative position; "
      f"21 answers). Model `vqa` (mmjax/models/vqa.py): question words -> a 1-block transformer; image -> conv "
      f"patch tokens (4x4, 8x8 grid) with learned positions; question tokens attend to the patches through "
      f"mmjax.fusion's `cross_attention` (2 blocks) and one self-attention block, masked mean, MLP over the answers. "
      f"The baseline is the same model without the image (question only: it can learn the answer priors of each "
      f"question). Both: {full['_steps']} steps of batch 64, AdamW 1e-3 (objective `classify`, evaluator `vqa`), "
      f"scored on the first {n} test questions. Run time {t_full / 60:.1f} min (image + question) and "
      f"{t_q / 60:.1f} min (question only) on the shared 2-core CPU (load average "
      f"{LOADS[os.path.join(RUNS, 'vqa_question_only')]} at the end).",
      "",
      *rows,
      "",
      f"The image + question model {'beats' if clearly_above(full['vqa/accuracy'], qonly['vqa/accuracy'], n) else 'does NOT clearly beat'} "
      f"the question-only baseline overall ({full['vqa/accuracy']:.3f} vs {qonly['vqa/accuracy']:.3f}, {n} "
      f"questions); per type it is better by more than two standard errors on "
      f"{', '.join(beats) if beats else 'none'}"
      f"{'' if len(beats) == len(QTYPES) else ', and not on ' + ', '.join(t for t in QTYPES if t not in beats)}"
      f".",
  ]
  command = f".venv/bin/python experiments/reports/colearning_generative.py --part vqa --steps {args.steps}"
  command += " --reuse" if args.reuse else ""
  write_section(TABLE, "vqa", "\n".join(lines), command, title=TITLE)
  print("\n".join(lines))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", choices=("mvae", "vqa"), required=True)
  parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
  parser.add_argument("--reuse", action="store_true",
                      help="rebuild the section from the last run's workdir (runs/colearn_gen/...) without training")
  args = parser.parse_args()
  global REUSE
  REUSE = args.reuse
  if args.steps is None:
    args.steps = 2500 if args.part == "mvae" else 1500
  {"mvae": part_mvae, "vqa": part_vqa}[args.part](args)


if __name__ == "__main__":
  main()
