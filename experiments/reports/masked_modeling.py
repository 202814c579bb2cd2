"""Masked-modeling results -> experiments/tables/masked_modeling.md + figures; two sections, each rewritten by its
own command (the other is kept).

  .venv/bin/python experiments/reports/masked_modeling.py [--workdir runs/masked_modeling] [--runs mae,m3ae,mlm]
  .venv/bin/python experiments/reports/masked_modeling.py --flickr8k [--flickr8k_runs runs] [--train_missing]

Shapes section (the default; ~9 min): trains experiments/{mae,m3ae,mlm}_shapes.py from scratch (fresh workdirs
under --workdir) with the one training loop, and evaluates with the configs' own evaluators:
- linear probe (evals/linear_probe.py) on the frozen image encoder of the MAE and the M3AE runs, against the same
  encoder at random initialisation (the run's own init, seed 0, plus seeds 1 and 2 of the same architecture),
  with the same probe (same examples, same standardisation, same l2 selection);
- held-out masked losses/accuracies (evals/masked_evals.py "masked") before and after training;
- reconstruction figures (the runs' `reconstruction.png`) copied to experiments/tables/figures/.

Flickr8k section (`--flickr8k`): reads the finished `mmjax.main` runs of experiments/{mae,m3ae}_flickr8k.py in
--flickr8k_runs (config.json + the last evaluation in metrics.jsonl; FLICKR8K_RUNS lists the workdirs and the
commands that make them: the random-init MAE encoder, `--config.total_steps=0`, MAE and M3AE pretrained, plus
optional ablations shown when present): CIFAR-10 linear-probe accuracy, held-out masked metrics, wall times, and
the runs' reconstruction figures copied to experiments/tables/figures/. With --train_missing it first runs every
one of them that has no evaluation yet (ablations included; in an empty --flickr8k_runs that regenerates the whole
section); without it, a required run missing stops the report naming the command to run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax.evals import runner as eval_runner  # noqa: E402
from mmjax.train import loop  # noqa: E402

TABLE = os.path.join(ROOT, "experiments", "tables", "masked_modeling.md")
FIGURES = os.path.join(ROOT, "experiments", "tables", "figures")
# name -> (experiment file, config overrides); the default report runs mae, m3ae, mlm; the others are ablations
# (e.g. --runs mae,mae_normpix).
RUNS = {"mae": ("mae_shapes.py", {}), "m3ae": ("m3ae_shapes.py", {}), "mlm": ("mlm_shapes.py", {}),
        "mae_normpix": ("mae_shapes.py", {"model.norm_pix_loss": True}),
        "mae_ratio50": ("mae_shapes.py", {"model.mask_ratio": 0.5})}
DEFAULT_RUNS = "mae,m3ae,mlm"
EXTRA_SEEDS = (1, 2)


def evaluate(trainer: loop.Trainer, params, names: str | None = None) -> dict[str, float]:
  config = trainer.config
  if names is not None:
    config = config.copy_and_resolve_references()
    config.evals.names = names
  return eval_runner.run(config, params, model=trainer.model, tokenizer=trainer.tokenizer, mesh=trainer.mesh)


def run_one(name: str, workdir: str, figures: str, runlocal: bool = False) -> dict:
  path, overrides = RUNS[name]
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", path), "runlocal" if runlocal else None)
  config.progress_bar = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for k in parents:
      node = node[k]
    node[leaf] = value
  out_overrides = ", ".join(f"{k}={v}" for k, v in overrides.items())
  wd = os.path.join(workdir, name)
  shutil.rmtree(wd, ignore_errors=True)
  trainer = loop.Trainer(config, wd)
  at_init = evaluate(trainer, trainer.state.params)      # the run's own initial parameters (seed 0)
  t0 = time.time()
  final = trainer.train()                                 # includes its final evaluation
  train_s = time.time() - t0
  out = {"config": config, "init": at_init, "final": final, "train_s": train_s, "workdir": wd,
         "params": int(trainer.num_params), "file": path, "overrides": out_overrides}
  if "linear_probe" in str(config.evals.names):
    out["seeds"] = [evaluate(trainer, trainer.init_params(s), "linear_probe") for s in EXTRA_SEEDS]
  png = os.path.join(wd, "reconstruction.png")
  if os.path.exists(png):
    os.makedirs(figures, exist_ok=True)
    out["figure"] = os.path.join(figures, f"{name}_shapes_reconstruction.png")
    shutil.copyfile(png, out["figure"])
  return out


def _probe_row(label: str, results: list[dict], tasks: list[str]) -> str:
  cells = []
  for t in tasks:
    vals = [r[f"linear_probe/{t}"] for r in results]
    cells.append(f"{vals[0]:.1f}" if len(vals) == 1 else f"{np.mean(vals):.1f} ± {np.std(vals):.1f}")
  return f"| {label} | " + " | ".join(cells) + " |"


def write_table(res: dict, command: str, total_s: float, table: str) -> None:
  lines = ["# Masked modeling on the shapes data", "",
           f"Generated by `{command}` on {datetime.date.today().isoformat()} "
           f"({jax.device_count()} {jax.devices()[0].platform.upper()} device(s), {total_s / 60:.1f} min in all).", ""]
  lines += ["Configs: experiments/{mae,m3ae,mlm}_shapes.py (their docstrings give the recipe and its deviations from "
            "the papers); all runs from scratch with the one training loop; probes and held-out metrics by the "
            "configs' evaluators.", ""]
  probe_runs = [n for n in res if "linear_probe" in str(res[n]["config"].evals.names)]
  if probe_runs:
    c = res[probe_runs[0]]["config"]
    probe = c.evals.linear_probe
    tasks = [t.strip() for t in str(probe.probe_tasks).split(",") if t.strip()]
    lines += ["## Linear probe on the frozen image encoder", "",
              f"Probe: {probe.probe_method} on standardised `{c.model.probe_pool}` features of all patches "
              f"(no masking), l2 picked on the last 20 % of probe-train; probe-train = the first "
              f"{probe.probe_train_examples} shapes `train` examples, probe-test = the first "
              f"{c.evals.num_examples} `test` examples; one object per image, labels of that object. "
              f"Top-1 accuracy in %, chance: shape 16.7, colour 12.5, size 33.3, position 11.1. "
              f"Random init: the run's own initial parameters (seed 0) and, as mean ± std, seeds 0, 1, 2.", "",
              "| encoder | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for n in probe_runs:
      r = res[n]
      c = r["config"]
      enc = c.model.encoder
      arch = f"ViT {enc.width}w x {enc.depth}, patch {c.model.vision.patch_size}"
      what = f"{r['file']}" + (f" with {r['overrides']}" if r["overrides"] else "")
      lines.append(_probe_row(f"{n}: random init, seed 0 ({arch})", [r["init"]], tasks))
      lines.append(_probe_row(f"{n}: random init, seeds 0-2", [r["init"], *r["seeds"]], tasks))
      lines.append(_probe_row(f"**{n}: pretrained** ({what}, {c.total_steps} steps x {c.batch_size})",
                              [r["final"]], tasks))
    lines.append("")
    for n in probe_runs:
      r = res[n]
      diffs = []
      for t in tasks:
        k = f"linear_probe/{t}"
        best = max(x[k] for x in (r["init"], *r["seeds"]))
        verdict = "beats" if r["final"][k] > best else "does not beat"
        diffs.append(f"{t} {r['final'][k] - r['init'][k]:+.1f} ({verdict} the best random seed, {best:.1f})")
      lines.append(f"- {n} pretrained minus its own random init: " + "; ".join(diffs) + ".")
    lines += ["", "Probe targets: colour is readable from pixel statistics (a random encoder already gets most of it), "
              "so it says little about learned structure; grid position (9 cells) needs where the object is and is "
              "the target chosen to test for learned spatial structure; size needs its extent; the shape class "
              "(6 shapes, objects of radius 5-10 px in 8 px patches) needs its outline.", ""]
  lines += ["## Held-out masked-modeling metrics (fixed masks, shapes `test` split)", "",
            "| run | params | steps x batch | train + eval time | metric | at init | trained |",
            "|---|---|---|---|---|---|---|"]
  for n in res:
    r = res[n]
    c = r["config"]
    skip = ("mask_ratio", "selected_frac")        # properties of the masking, not of the model
    for k in sorted(k for k in r["final"] if k.startswith("masked/") and not k.endswith(skip)):
      lines.append(f"| {n} | {r['params']:,} | {c.total_steps} x {c.batch_size} | {r['train_s'] / 60:.1f} min | "
                   f"{k[len('masked/'):]} | {r['init'][k]:.4f} | {r['final'][k]:.4f} |")
  lines.append("")
  figs = [(n, res[n]["figure"]) for n in res if "figure" in res[n]]
  if figs:
    lines += ["## Reconstructions", ""]
    for n, path in figs:
      rel = os.path.relpath(path, os.path.dirname(table))
      lines.append(f"![{n} reconstruction]({rel})")
      lines.append("")
  write_section(table, "shapes", lines)

# ------------------------------------------------------------------------------------------- table sections
SECTIONS = ("shapes", "flickr8k")        # the order of the sections in the table file
_GENERATED = re.compile(r"^Generated by `([^`]+)` on (\d{4}-\d{2}-\d{2})")


def read_sections(table: str) -> dict[str, list[str]]:
  """The sections of an existing table file: name -> lines (between `<!-- section NAME -->` and its end marker).
  A file without markers (written before the Flickr8k section existed) is read as the shapes section."""
  if not os.path.exists(table):
    return {}
  lines = open(table).read().splitlines()
  out: dict[str, list[str]] = {}
  current = None
  for line in lines:
    m = re.fullmatch(r"<!-- section (\w+) -->", line)
    if m:
      current = m.group(1)
      out[current] = []
    elif re.fullmatch(r"<!-- end section \w+ -->", line):
      current = None
    elif current is not None:
      out[current].append(line)
  if not out and lines and _GENERATED.match(lines[0]):
    body = lines[1:]
    while body and not body[0].strip():
      body = body[1:]
    head = body[:1] if body and body[0].startswith("# ") else []
    out["shapes"] = head + ["", lines[0]] + body[len(head):]
  return out


def write_section(table: str, name: str, lines: list[str]) -> None:
  """Replaces section `name` of the table file (keeping the others) and rewrites its first line, which names
  the command and date of every section (each section also starts with its own "Generated by" line)."""
  sections = read_sections(table)
  sections[name] = [line.rstrip() for line in lines]
  while sections[name] and not sections[name][-1]:
    sections[name].pop()
  names = [n for n in SECTIONS if n in sections] + sorted(n for n in sections if n not in SECTIONS)
  made = []
  for n in names:
    m = next((_GENERATED.match(line) for line in sections[n] if _GENERATED.match(line)), None)
    if m:
      made.append(f"`{m.group(1)}` on {m.group(2)} ({n} section)")
  out = ["Generated by " + " and ".join(made) + "; each section below names its own command.", ""]
  for n in names:
    out += [f"<!-- section {n} -->", *sections[n], f"<!-- end section {n} -->", ""]
  os.makedirs(os.path.dirname(os.path.abspath(table)), exist_ok=True)
  tmp = table + ".tmp"
  with open(tmp, "w") as f:
    f.write("\n".join(out))
  os.replace(tmp, table)


# ------------------------------------------------------------------------------------------- Flickr8k section
_MAIN = "python -m mmjax.main --config experiments/{cfg}.py --workdir runs/{name}"
_INIT = _MAIN + " --config.total_steps=0"
_GAP_EVAL = ("cp -r runs/{src} runs/{name} && " + _MAIN + " --mode eval --config.model.probe_pool=gap")
# The Flickr8k runs in table order: workdir name (under --flickr8k_runs), label, the command that makes it,
# required (else shown only when the workdir exists), baseline (the random-init row a pretrained row is compared
# with), pool (the probe features when config.json does not say: evaluations of a copied checkpoint).
FLICKR8K_RUNS = (
    dict(name="mae_flickr8k_init", label="MAE encoder, random init (seed 0)", required=True,
         cmd=_INIT.format(cfg="mae_flickr8k", name="mae_flickr8k_init")),
    dict(name="mae_flickr8k_init_seed1", label="MAE encoder, random init (seed 1)",
         cmd=_INIT.format(cfg="mae_flickr8k", name="mae_flickr8k_init_seed1") + " --config.seed=1"),
    dict(name="mae_flickr8k", label="MAE pretrained", required=True, baseline="mae_flickr8k_init",
         cmd=_MAIN.format(cfg="mae_flickr8k", name="mae_flickr8k")),
    dict(name="m3ae_flickr8k_init", label="M3AE encoder, random init (seed 0)",
         cmd=_INIT.format(cfg="m3ae_flickr8k", name="m3ae_flickr8k_init")),
    dict(name="m3ae_flickr8k", label="M3AE pretrained (image-only features)", required=True,
         baseline="m3ae_flickr8k_init", cmd=_MAIN.format(cfg="m3ae_flickr8k", name="m3ae_flickr8k")),
    dict(name="mae_flickr8k_init_gap", label="MAE encoder, random init (seed 0)",
         cmd=_INIT.format(cfg="mae_flickr8k", name="mae_flickr8k_init_gap") + " --config.model.probe_pool=gap"),
    dict(name="mae_flickr8k_gap", label="MAE pretrained", baseline="mae_flickr8k_init_gap", pool="gap",
         eval_only="mae_flickr8k",
         cmd=_GAP_EVAL.format(src="mae_flickr8k", cfg="mae_flickr8k", name="mae_flickr8k_gap")),
    dict(name="m3ae_flickr8k_init_gap", label="M3AE encoder, random init (seed 0)",
         cmd=_INIT.format(cfg="m3ae_flickr8k", name="m3ae_flickr8k_init_gap") + " --config.model.probe_pool=gap"),
    dict(name="m3ae_flickr8k_gap", label="M3AE pretrained (image-only features)", baseline="m3ae_flickr8k_init_gap",
         pool="gap", eval_only="m3ae_flickr8k",
         cmd=_GAP_EVAL.format(src="m3ae_flickr8k", cfg="m3ae_flickr8k", name="m3ae_flickr8k_gap")),
)
POOL_NAMES = {"cls": "cls token", "gap": "mean of the patch tokens"}


def finished_run(workdir: str) -> dict | None:
  """The config and last evaluation of a workdir written by `mmjax.main`, or None if it has no evaluation yet:
  {"config", "step", "eval" (the last evaluation row, its "eval/" prefix dropped), "train_s" (from config.json,
  written when training starts, to the last train row: compilation and all steps), "eval_s" (last train row to
  the evaluation row)}."""
  metrics, cfg_path = os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "config.json")
  if not (os.path.exists(metrics) and os.path.exists(cfg_path)):
    return None
  rows = [json.loads(line) for line in open(metrics) if line.strip()]
  evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
  if not evals:
    return None
  last = evals[-1]
  train = [r for r in rows if "train/loss" in r and r["step"] <= last["step"]]
  return {"config": json.load(open(cfg_path)), "step": last["step"], "workdir": workdir,
          "eval": {k[len("eval/"):]: v for k, v in last.items() if k.startswith("eval/")},
          "train_s": train[-1]["time"] - min(os.path.getmtime(cfg_path), train[0]["time"]) if train else 0.0,
          "eval_s": last["time"] - train[-1]["time"] if train else None}


def binomial_ci(acc_percent: float, n: int) -> float:
  """Half-width in points of the 95 % normal-approximation interval of an accuracy measured on n examples."""
  p = acc_percent / 100
  return 196 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def run_missing(runs_dir: str, command: str) -> None:
  cmd = command.replace("python", sys.executable, 1).replace(" runs/", f" {runs_dir}/") + " --config.progress_bar=False"
  print(f"running: {cmd}", flush=True)
  subprocess.run(cmd, shell=True, check=True, cwd=ROOT)


def flickr8k_section(runs_dir: str, command: str, table: str, figures: str, train_missing: bool) -> list[str]:
  res: dict[str, dict] = {}
  for spec in FLICKR8K_RUNS:
    wd = os.path.join(runs_dir, spec["name"])
    r = finished_run(wd)
    if r is None and train_missing:
      run_missing(runs_dir, spec["cmd"])
      r = finished_run(wd)
    if r is None and spec.get("required"):
      sys.exit(f"{wd} has no finished evaluation; run `{spec['cmd']}` (or pass --train_missing)")
    if r is not None:
      r["pool"] = spec.get("pool", r["config"]["model"]["probe_pool"])
      if spec.get("eval_only") in res:         # a copy of that run: its training time is the run's
        r["train_s"] = res[spec["eval_only"]]["train_s"]
      res[spec["name"]] = dict(r, **spec)
  lines = ["# Masked modeling on Flickr8k, linear probe on CIFAR-10", "",
           f"Generated by `{command}` on {datetime.date.today().isoformat()} from the runs' workdirs "
           f"(config.json and the last evaluation in metrics.jsonl, written by `mmjax.main`).", "",
           "Runs (from the repository root; configs experiments/{mae,m3ae}_flickr8k.py, whose docstrings give the "
           "recipe and its deviations from the papers; `--config.total_steps=0` evaluates the initial parameters, "
           "the mean-pooled rows evaluate a copy of a finished run with `--config.model.probe_pool=gap`):", ""]
  lines += [f"- `{r['name']}`: `{r['cmd']}`" for r in res.values()]
  ref = res["mae_flickr8k"]
  ev, cfg = ref["config"]["evals"], ref["config"]
  n_tr = int(ref["eval"].get("linear_probe/train_examples", 0))
  n_te = int(ref["eval"].get("linear_probe/test_examples", 0))
  per_class, n_val = n_tr // 10, round(n_tr * 0.2) // 10
  val = f" (ranks {per_class - n_val}-{per_class - 1} of every class)" if n_tr % 10 == 0 and n_val else ""
  lines += ["", f"Pretraining data: the 6,000 Flickr8k training images (stored at 128 px, random-resized crops read "
            f"at {cfg['data']['image_size']} px); M3AE also sees one of each image's 5 captions per step. "
            f"Both pretrainings: {cfg['total_steps']} steps of {cfg['batch_size']}, one process on a 2-core CPU (wall "
            f"times include whatever else ran on it); train wall = compilation + all steps, "
            f"eval wall = the final evaluation (mostly encoding the 10,000 CIFAR images).", "",
            f"Probe: the {ev['linear_probe']['probe_data']} images (CIFAR-10 test set, 1,000 per class) split by a "
            f"fixed, "
            f"class-balanced rule: within each class the files sorted by name, `test/<class>/0000-0499.jpg` -> "
            f"probe-train ({n_tr}), `0500-0999` -> probe-test ({n_te}); the 32 px images upsampled to the "
            f"encoder's {cfg['model']['vision']['image_size']} px with PIL's bicubic filter and mapped to [-1, 1]; "
            f"features of the unmasked image (no text) from the frozen encoder's final LayerNorm, either its cls "
            f"token (the paper's probe) or the mean of its patch tokens; {ev['linear_probe']['probe_method']} probe "
            f"on standardised "
            f"features, l2 picked on the last 20 % of probe-train{val}, then refit on all of probe-train. Top-1 "
            f"accuracy in % on probe-test (chance 10.0) ± the 95 % binomial interval of {n_te} test images.", "",
            "| encoder | probe features | pretraining | steps x batch | train wall | eval wall | CIFAR-10 probe top-1 "
            "| l2 |", "|---|---|---|---|---|---|---|---|"]
  for r in res.values():
    c, e = r["config"], r["eval"]
    enc, vis = c["model"]["encoder"], c["model"]["vision"]
    arch = f"ViT {enc['width']}w x {enc['depth']}/{vis['patch_size']}"
    pre = "none" if r["step"] == 0 else f"{c['objective']} on Flickr8k"
    acc = e["linear_probe/label"]
    n = int(e.get("linear_probe/test_examples", n_te))
    wall = f"{r['train_s'] / 60:.1f} min" if r["step"] else "–"
    evw = f"{r['eval_s'] / 60:.1f} min" if r["eval_s"] is not None and not r.get("eval_only") else "–"
    bold = "**" if r["step"] else ""
    lines.append(f"| {r['label']}; {arch} | {POOL_NAMES.get(r['pool'], r['pool'])} | {pre} | "
                 f"{r['step']} x {c['batch_size']} | {wall} | {evw} | {bold}{acc:.1f}{bold} ± "
                 f"{binomial_ci(acc, n):.1f} | {e['linear_probe/label_l2']:g} |")
  lines.append("")
  for r in res.values():
    base = res.get(r.get("baseline", ""))
    if base is None and r.get("baseline"):
      base = res["mae_flickr8k_init"] if r["pool"] == res["mae_flickr8k_init"]["pool"] else None
    if base is not None:
      diff = r["eval"]["linear_probe/label"] - base["eval"]["linear_probe/label"]
      lines.append(f"- {r['label']}, {POOL_NAMES.get(r['pool'], r['pool'])}: {diff:+.1f} points over the "
                   f"{base['label'][:-len(' (seed 0)')] if base['label'].endswith(' (seed 0)') else base['label']} "
                   f"(seed 0) with the same features.")
  seeds = [res[n]["eval"]["linear_probe/label"] for n in ("mae_flickr8k_init", "mae_flickr8k_init_seed1")
           if n in res]
  if len(seeds) == 2:
    lines.append(f"- Seed-to-seed spread of the random-init probe (MAE encoder, cls, seeds 0 and 1): "
                 f"{abs(seeds[0] - seeds[1]):.1f} points.")
  lines += ["", f"## Held-out masked-modeling metrics (fixed masks, the first {ev['num_examples']} Flickr8k test "
            f"images, first caption)", "", "| run | steps | metric | value |", "|---|---|---|---|"]
  skip = ("mask_ratio", "selected_frac")
  for r in res.values():
    if r.get("eval_only") or r["pool"] != "cls":
      continue                                  # same parameters as a row above
    for k in sorted(k for k in r["eval"] if k.startswith("masked/") and not k.endswith(skip)):
      lines.append(f"| {r['label']} | {r['step']} | {k[len('masked/'):]} | {r['eval'][k]:.4f} |")
  lines.append("")
  figs = []
  for name in ("mae_flickr8k", "m3ae_flickr8k"):
    png = os.path.join(res[name]["workdir"], "reconstruction.png")
    if os.path.exists(png):
      os.makedirs(figures, exist_ok=True)
      dst = os.path.join(figures, f"{name}_reconstruction.png")
      shutil.copyfile(png, dst)
      figs.append((res[name], dst))
  if figs:
    lines += ["## Reconstructions (Flickr8k test images, 75 % of the patches masked)", ""]
    for r, dst in figs:
      what = (" Under each column: the image's first caption and, after `->`, that caption with its masked "
              "tokens (75 % of them) replaced by the model's predictions." if r["config"]["objective"] == "m3ae"
              else "")
      lines += [f"{r['label']}: original / masked input / reconstruction (visible patches pasted back; the "
                f"per-patch normalised predictions shown with each patch's true mean and std).{what}", "",
                f"![{r['name']} reconstruction]({os.path.relpath(dst, os.path.dirname(os.path.abspath(table)))})",
                ""]
  return lines


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "masked_modeling"))
  ap.add_argument("--table", default=TABLE, help="output markdown (figures go to figures/ beside it)")
  ap.add_argument("--runlocal", action="store_true", help="the configs' runlocal variants (a smoke test)")
  ap.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated, from {', '.join(RUNS)}")
  ap.add_argument("--flickr8k", action="store_true",
                  help="write only the Flickr8k section, from the finished runs in --flickr8k_runs")
  ap.add_argument("--flickr8k_runs", default=os.path.join(ROOT, "runs"),
                  help="folder holding the Flickr8k workdirs (mae_flickr8k_init, mae_flickr8k, m3ae_flickr8k, ...)")
  ap.add_argument("--train_missing", action="store_true",
                  help="--flickr8k: first run every Flickr8k run that has no evaluation yet (~30-60 min on 2 CPUs)")
  args = ap.parse_args()
  command = " ".join([".venv/bin/python experiments/reports/masked_modeling.py", *sys.argv[1:]])
  figures = os.path.join(os.path.dirname(os.path.abspath(args.table)), "figures")
  if args.flickr8k:
    write_section(args.table, "flickr8k", flickr8k_section(args.flickr8k_runs, command, args.table, figures,
                                                           args.train_missing))
    print(f"wrote the Flickr8k section of {args.table}")
    return
  names = [n.strip() for n in args.runs.split(",") if n.strip()]
  unknown = [n for n in names if n not in RUNS]
  if unknown:
    ap.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
  t0 = time.time()
  res = {}
  for n in names:
    res[n] = run_one(n, args.workdir, figures, args.runlocal)
    print(f"{n}: {res[n]['final']} ({res[n]['train_s']:.0f} s)", flush=True)
  write_table(res, command, time.time() - t0, args.table)
  print(f"wrote the shapes section of {args.table}")


if __name__ == "__main__":
  main()
