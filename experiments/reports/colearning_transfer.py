"""Co-learning by transfer: MCTN on CMU-MOSI and cross-modal distillation on AV-MNIST -> sections "mctn" and
"distillation" of experiments/tables/colearning.md (through experiments/reports/sections.py, one command each).

  .venv/bin/python experiments/reports/colearning_transfer.py --part mctn [--seeds 3]
  .venv/bin/python experiments/reports/colearning_transfer.py --part distillation [--seeds 3] [--label_fraction 0.02]
  .venv/bin/python experiments/reports/colearning_transfer.py --part clip_features [--seeds 3]   (section
      "distillation_features": the CLIP feature-distillation demo on shapes)

Every run goes through the one training loop (`mmjax.train.loop.Trainer`, exactly what `python -m mmjax.main
--config ... --workdir ...` runs) with the experiment configs and only `seed` changed; workdirs under
runs/colearn_transfer/ (rewritten). Scores: the "classification" evaluator on the test split after the fixed
budget (no model selection).

mctn: experiments/mctn_mosi.py variants mctn (translation + cycle), seq2seq (translation only) and encoder (the same
  text encoder, CE only) vs the text-only baseline experiments/mosi_fusion.py:text, same protocol (20 epochs, AdamW
  1e-3, cosine, batch 32, dropout 0.2); test-time input is text alone for all of them.
distillation: the teacher experiments/avmnist_fusion.py:image with data.image_pca_energy=0 (clean images, all train
  labels, seed 0), then experiments/distill_avmnist.py:distill (teacher soft targets on all 18000 paired train clips
  + the few labels) vs experiments/distill_avmnist.py:labels_only (the same audio CNN on its few labels alone);
  with --upper_bound also the same student on all 18000 labels (labels_only, label_fraction 1; seed 0).
Raw per-seed numbers: experiments/tables/colearning_transfer_<part>.json; `--from_json` re-renders a section from
that file (the results of the part's last run) without training.
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
sys.path.insert(0, os.path.join(ROOT, "experiments", "reports"))

import numpy as np  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from sections import write_section  # noqa: E402

TABLE = os.path.join(ROOT, "experiments", "tables", "colearning.md")
TITLE = "Co-learning, generative models and reasoning"
RUNS = os.path.join(ROOT, "runs", "colearn_transfer")
EXP = os.path.join(ROOT, "experiments")


def run(config_path: str, arg: str, workdir: str, seed: int, before=None, **overrides) -> dict:
  """Trains one config through the loop from scratch (the workdir is cleared first, then `before(workdir)` runs)
  -> {metric (evaluator prefix dropped): value} + "seconds"."""
  from mmjax.train import loop
  cfg = config_lib.load_experiment(os.path.join(EXP, config_path), arg)
  cfg.seed = seed
  cfg.progress_bar = False
  cfg.print_sharding = False
  for key, value in overrides.items():
    node = cfg
    *parents, last = key.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(workdir)
  if before is not None:
    before(workdir)
  t0 = time.time()
  results = loop.Trainer(cfg, workdir).train()
  out = {k.split("/", 1)[-1]: float(v) for k, v in results.items()}
  out["seconds"] = time.time() - t0
  main = out.get("accuracy", out.get("shape_colour", float("nan")))
  print(f"colearning_transfer: {config_path}:{arg} seed {seed}: {main:.3f} ({out['seconds']:.0f} s)", flush=True)
  return out


def mean_std(xs) -> str:
  xs = 100 * np.asarray(xs, np.float64)
  return f"{xs.mean():.1f} ± {xs.std():.1f}"


def verdict(method: str, ours: list[float], base: list[float], baseline: str) -> str:
  """One sentence: does `method` beat `baseline` (per-seed paired differences, same seeds)?"""
  d = 100 * (np.asarray(ours) - np.asarray(base))
  diff = f"{d.mean():+.1f} points (paired over seeds: {', '.join(f'{x:+.1f}' for x in d)})"
  spread = 100 * (np.std(ours) + np.std(base))
  if d.mean() > max(spread, 0.05) and (d > 0).all():
    return f"**{method} beats {baseline}**: {diff}, more than the seed spread and in every seed."
  if d.mean() > 0:
    why = (f"within the seed spread ({spread:.1f} points: sum of the two stds)" if d.mean() <= max(spread, 0.05)
           else "not higher in every seed")
    return f"**{method} does not clearly beat {baseline}**: {diff}, {why}."
  return f"**{method} does not beat {baseline}**: {diff}."


# ------------------------------------------------------------------------------------------------ MCTN
MCTN_ROWS = [  # (display name, config file, argument)
    ("text only (baseline: experiments/mosi_fusion.py:text)", "mosi_fusion.py", "text"),
    ("MCTN: text → audio+video → text (translation + cycle)", "mctn_mosi.py", "mctn"),
    ("seq2seq: text → audio+video (translation only, no cycle)", "mctn_mosi.py", "seq2seq"),
    ("MCTN encoder, CE only (no translation: control)", "mctn_mosi.py", "encoder"),
]


def part_mctn(seeds: list[int], raw: dict | None = None) -> tuple[str, dict]:
  if raw is None:
    raw = {}
    for name, path, arg in MCTN_ROWS:
      raw[arg] = [run(path, arg, os.path.join(RUNS, "mctn", f"{arg}_s{s}"), s) for s in seeds]
  lines = [
      "### MCTN on CMU-MOSI: text alone at test time",
      "",
      "Multimodal Cyclic Translation Network (Pham et al. 2019; mmjax/models/mctn.py, objective `mctn`): a GRU "
      "encoder reads the text features (each utterance vector cut into 4 tokens), a GRU decoder translates its states "
      "into the audio + video features (173, MSE), the shared encoder re-encodes that translation and a second decoder "
      "translates it back into text (cyclic MSE); the classifier reads only the text encoder states, so test time "
      "needs only text. Loss = CE + 1 · translation + 1 · cycle. Same protocol as experiments/tables/mosi.md (its "
      "text-only row is the baseline): utterance-level features of Poria et al. 2017, train 1447 / test 752 "
      "utterances, 20 epochs (900 steps of 32), AdamW 1e-3, cosine, dropout 0.2, final model scored on test, no "
      f"model selection. Seeds {', '.join(map(str, seeds))} (init, dropout, batch order); mean ± std over seeds. "
      "The labels here are binary (the builder keeps the sign of the sentiment score only), so MAE and correlation, "
      "which need the continuous score, are not reported (the mosi table does not report them either).",
      "",
      "| method | test accuracy (%) | F1 weighted (%) | F1 positive class (%) | train + eval time / run (s) |",
      "|---|---|---|---|---|",
  ]
  for name, _, arg in MCTN_ROWS:
    r = raw[arg]
    lines.append(f"| {name} | {mean_std([x['accuracy'] for x in r])} | {mean_std([x['f1_weighted'] for x in r])} | "
                 f"{mean_std([x['f1'] for x in r])} | {np.mean([x['seconds'] for x in r]):.0f} |")
  base = [x["accuracy"] for x in raw["text"]]
  lines += ["", "- " + verdict("MCTN", [x["accuracy"] for x in raw["mctn"]], base, "the text-only baseline"),
            "- " + verdict("MCTN", [x["accuracy"] for x in raw["mctn"]], [x["accuracy"] for x in raw["encoder"]],
                    "its own encoder trained without translation"),
            "",
            "Run times are wall-clock on 2 CPU cores shared with other jobs (compilation included)."]
  return "\n".join(lines), raw


# ------------------------------------------------------------------------------------------------ distillation
def part_distillation(seeds: list[int], fraction: float, upper_bound: bool, raw: dict | None = None
                      ) -> tuple[str, dict]:
  if raw is None:
    raw = run_distillation(seeds, fraction, upper_bound)
  fraction, upper_bound = raw["label_fraction"], "all_labels" in raw
  return render_distillation(seeds, fraction, upper_bound, raw), raw


def run_distillation(seeds: list[int], fraction: float, upper_bound: bool) -> dict:
  teacher_dir = os.path.join(RUNS, "distill", "teacher_image")
  raw: dict = {"label_fraction": fraction}
  raw["teacher"] = run("avmnist_fusion.py", "image", teacher_dir, 0, **{"data.image_pca_energy": 0.0})
  common = {"data.label_fraction": fraction}
  raw["distill"] = [run("distill_avmnist.py", "distill", os.path.join(RUNS, "distill", f"distill_s{s}"), s,
                        **common, **{"model.teacher_workdir": teacher_dir}) for s in seeds]
  raw["labels_only"] = [run("distill_avmnist.py", "labels_only", os.path.join(RUNS, "distill", f"labels_only_s{s}"),
                            s, **common) for s in seeds]
  if upper_bound:
    raw["all_labels"] = [run("distill_avmnist.py", "labels_only", os.path.join(RUNS, "distill", "all_labels_s0"), 0,
                             **{"data.label_fraction": 1.0})]
  return raw


def render_distillation(seeds: list[int], fraction: float, upper_bound: bool, raw: dict) -> str:
  n_lab = int(round(fraction * 18000))
  cfg = config_lib.load_experiment(os.path.join(EXP, "distill_avmnist.py"), "distill")
  temp, alpha, lr = cfg.objective_kwargs.temperature, cfg.objective_kwargs.alpha, cfg.optim.lr
  t, d, b = raw["teacher"], raw["distill"], raw["labels_only"]
  lines = [
      "### Cross-modal distillation on AV-MNIST: image teacher → spoken-digit student",
      "",
      "Gupta et al. 2016 (supervision transfer through paired data) with Hinton et al. 2015 soft targets "
      "(mmjax/models/distill.py `distill_student`, objective `distill`). Teacher: the image CNN of "
      "experiments/avmnist_fusion.py:image trained by the loop on clean MNIST images of the 18000 AV-MNIST train pairs "
      "with all their labels (seed 0; 3 conv stages 8/16/32, 1124 steps of 64, AdamW 1e-3), then frozen "
      "(`model.teacher_workdir`). Student: an audio CNN (4 conv + GroupNorm stages 8/16/32/64, head 64; log-mel "
      f"[51, 40] of clean audio), which has labels for only {100 * fraction:g} % of "
      f"the train clips ({n_lab}: stratified, data.label_seed 0, data set `avmnist_semi`). Distillation: all 18000 "
      f"paired train clips, loss {1 - alpha:g} · CE(labelled clips) + {alpha:g} · T² · KL(teacher ‖ student) at "
      f"T = {temp:g} (the T² "
      "convention of Hinton et al.: soft-target gradients keep their size as T changes), the teacher seeing the "
      "paired image. Baseline: the same student trained on its labelled clips alone (`labels_only`). Same budget for "
      f"both: {cfg.total_steps} steps of {cfg.batch_size}, AdamW {lr:g}, cosine, dropout 0.1; final model, scored "
      "from audio alone on the 10000 "
      f"test pairs. Student seeds {', '.join(map(str, seeds))}; mean ± std over seeds.",
      "",
      "| model | labels it trains on | test accuracy (%) | macro F1 (%) | train + eval time / run (s) |",
      "|---|---|---|---|---|",
      f"| teacher: image CNN (frozen), image input | 18000 image labels | {100 * t['accuracy']:.1f} | "
      f"{100 * t['f1_macro']:.1f} | {t['seconds']:.0f} |",
      f"| **student, distilled** (audio input) | {n_lab} audio labels + teacher on 18000 pairs | "
      f"{mean_std([x['accuracy'] for x in d])} | {mean_std([x['f1_macro'] for x in d])} | "
      f"{np.mean([x['seconds'] for x in d]):.0f} |",
      f"| student on its labels alone (baseline, audio input) | {n_lab} audio labels | "
      f"{mean_std([x['accuracy'] for x in b])} | {mean_std([x['f1_macro'] for x in b])} | "
      f"{np.mean([x['seconds'] for x in b]):.0f} |",
  ]
  if upper_bound:
    u = raw["all_labels"][0]
    lines.append(f"| the same student on all labels (reference, seed 0) | 18000 audio labels | {100 * u['accuracy']:.1f} | "
                 f"{100 * u['f1_macro']:.1f} | {u['seconds']:.0f} |")
  lines += ["", verdict("The distilled student", [x["accuracy"] for x in d], [x["accuracy"] for x in b],
                        f"the student trained on its {n_lab} labels alone"),
            "",
            "Reading these numbers: AV-MNIST pairs an image and a recording of the same digit (not the same event), so "
            "the teacher's soft targets carry the class of the paired clip, blurred by the teacher's errors on that "
            "image. The 18000 train pairs reuse 2400 FSDD recordings about 7.5 times each, every time with another "
            "image, so the teacher's errors on single images average out per recording: the student can (and does) "
            "score above its teacher. The test split has 300 recordings (FSDD indices 0-4, disjoint from train's, the "
            "same 6 speakers) reused about 33 times, so its effective size for the audio student is about 300 "
            "recordings, not 10000. Run times are wall-clock on 2 CPU cores shared with other jobs (compilation and "
            "the in-memory AV-MNIST preprocessing included)."]
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ CLIP features
def part_clip_features(seeds: list[int], raw: dict | None = None) -> tuple[str, dict]:
  if raw is None:
    teacher_dir = os.path.join(RUNS, "clip_features", "teacher")
    raw = {"teacher": run("clip_shapes.py", "", teacher_dir, 0)}
    tok = os.path.join(teacher_dir, "tokenizer.json")
    same_tokens = lambda wd: shutil.copy(tok, os.path.join(wd, "tokenizer.json"))   # the teacher's tokens
    raw["distill"] = [run("distill_clip_shapes.py", "distill", os.path.join(RUNS, "clip_features", f"distill_s{s}"),
                          s, before=same_tokens, **{"model.teacher_workdir": teacher_dir}) for s in seeds]
    raw["clip"] = [run("distill_clip_shapes.py", "clip", os.path.join(RUNS, "clip_features", f"clip_s{s}"), s,
                       before=same_tokens) for s in seeds]
  cfg = config_lib.load_experiment(os.path.join(EXP, "distill_clip_shapes.py"), "distill")
  ok = cfg.objective_kwargs
  keys = [("shape_colour", "zero-shot shape+colour"), ("shape", "zero-shot shape"), ("colour", "zero-shot colour"),
          ("i2t_R@1", "image→text R@1"), ("t2i_R@1", "text→image R@1")]
  ms = lambda rows, k: f"{np.mean([r[k] for r in rows]):.1f} ± {np.std([r[k] for r in rows]):.1f}"
  lines = [
      "### Feature distillation: frozen CLIP → small CLIP (shapes demo)",
      "",
      "Objective `clip_feature_distill` (mmjax/objectives/colearning.py, model `clip_distill_student`): a small CLIP "
      "student (ViT patch 16, width 64, 1 layer; text width 64, 1 layer; embed 64, then a linear map to the teacher's "
      f"128-d space) matched to a frozen CLIP's unit-norm image and text embeddings with the `{ok.kind}` loss "
      f"(τ = {ok.temperature}) plus {ok.clip_weight} × its own CLIP loss. Teacher: "
      "experiments/clip_shapes.py (ViT patch 8, width 128, 2 layers; 700 steps; seed 0) loaded from its workdir "
      "(`model.teacher_workdir`; an OpenCLIP checkpoint works the same way through `model.teacher_open_clip`). "
      f"Baseline: the same student trained with the plain CLIP loss. Both {cfg.total_steps} steps of "
      f"{cfg.batch_size}, the teacher's tokenizer; the \"clip\" evaluator on the shapes test data (1000 examples; %). "
      f"Student seeds {', '.join(map(str, seeds))}; mean ± std.",
      "",
      "| model | " + " | ".join(name for _, name in keys) + " | train + eval time / run (s) |",
      "|---|" + "---|" * (len(keys) + 1),
      "| teacher (frozen) | " + " | ".join(f"{raw['teacher'][k]:.1f}" for k, _ in keys) +
      f" | {raw['teacher']['seconds']:.0f} |",
      "| **student, feature-distilled** | " + " | ".join(ms(raw["distill"], k) for k, _ in keys) +
      f" | {np.mean([r['seconds'] for r in raw['distill']]):.0f} |",
      "| student, plain CLIP loss (baseline) | " + " | ".join(ms(raw["clip"], k) for k, _ in keys) +
      f" | {np.mean([r['seconds'] for r in raw['clip']]):.0f} |",
      "",
  ]
  for k, what in keys:
    lines.append("- " + verdict("The feature-distilled student", [r[k] / 100 for r in raw["distill"]],
                                [r[k] / 100 for r in raw["clip"]], f"the plain-CLIP student on {what}"))
  lines += ["", f"A demo at a small budget: the teacher itself is weak on shape ({raw['teacher']['shape_colour']:.0f} % "
            "zero-shot shape+colour), so "
            "there is little to transfer; the runs show the objective working end to end with a loop-trained CLIP "
            "teacher, not a tuned result. The distilled runs are slower because every step also runs the teacher."]
  return "\n".join(lines), raw


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--part", choices=("mctn", "distillation", "clip_features"), required=True)
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--label_fraction", type=float, default=0.02)
  ap.add_argument("--upper_bound", action="store_true", help="distillation: also the student on all labels")
  ap.add_argument("--from_json", action="store_true",
                  help="re-render the section from the raw results of the part's last run (its JSON), training nothing")
  args = ap.parse_args()
  name = {"mctn": "mctn", "distillation": "distillation", "clip_features": "distillation_features"}[args.part]
  raw_path = os.path.join(ROOT, "experiments", "tables", f"colearning_transfer_{name}.json")
  raw = None
  if args.from_json:
    with open(raw_path) as f:
      raw = json.load(f)
  seeds = raw.get("seeds", list(range(args.seeds))) if raw else list(range(args.seeds))
  t0 = time.time()
  if args.part == "mctn":
    markdown, raw = part_mctn(seeds, raw)
  elif args.part == "distillation":
    markdown, raw = part_distillation(seeds, args.label_fraction, args.upper_bound, raw)
  else:
    markdown, raw = part_clip_features(seeds, raw)
  raw["seeds"] = seeds
  minutes = raw.get("minutes") if args.from_json else (time.time() - t0) / 60
  raw["minutes"] = minutes
  command = " ".join([".venv/bin/python experiments/reports/colearning_transfer.py", *sys.argv[1:]])
  took = f"Whole part: {minutes:.1f} min of training and evaluation. " if minutes is not None else ""
  markdown += f"\n\n{took}Raw per-seed numbers: `colearning_transfer_{name}.json` beside this file."
  if args.from_json:
    markdown += (" This section was re-rendered from that file (`--from_json`): the numbers are those of the part's "
                 "last training run (the same command without `--from_json`).")
  with open(raw_path, "w") as f:
    json.dump(raw, f, indent=1)
  write_section(TABLE, name, markdown, command, title=TITLE)
  print(markdown)


if __name__ == "__main__":
  main()
