"""Translation / generation table -> experiments/tables/generation.md and figures generation_*.png.

  .venv/bin/python experiments/reports/generation.py [--workdir runs/generation] [--runs NAME,...] [--retrain]
      [--guidance 1,3,6]

Trains (with the one training loop, `python -m mmjax.main`) every run of RUNS whose workdir under --workdir has no
final evaluation yet (a finished run is reused; --retrain starts it again), then reads the final evaluation of each
from its metrics.jsonl:
  - captioning on shapes (experiments/caption_shapes.py, CNN memory, and :vit): greedy captions of 500 test
    images, attributes read back from the words (exact match of size + colour + shape + position), BLEU-4, CIDEr-D;
  - captioning on Flickr8k (experiments/caption_flickr8k.py; needs ../shared/data/flickr8k, skipped without it):
    beam-3 BLEU-1..4 and CIDEr-D on the 1k test images against their 5 references;
  - text-to-image on shapes (experiments/t2i_shapes.py, U-Net, and :dit): the "generation" evaluator's judge accuracy
    (shape / colour / both) on 480 prompts, at each classifier-free guidance of --guidance (re-evaluated from the
    final checkpoint), and the CLIP score with the CLIP of the "clip" run (experiments/clip_shapes.py, the demo).
The PNGs each evaluator writes are copied to experiments/tables/figures/generation_<run>.png.
All numbers come from the runs; on this 2-core CPU the whole report takes about 1.5 h on an idle machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

TABLE = os.path.join(ROOT, "experiments", "tables", "generation.md")
FIGURES = os.path.join(ROOT, "experiments", "tables", "figures")
# name -> (config argument of mmjax.main, extra --config overrides, the PNG the evaluator writes)
RUNS = {
    "clip": ("experiments/clip_shapes.py", [], None),
    "caption_cnn": ("experiments/caption_shapes.py", [], "captions.png"),
    "caption_vit": ("experiments/caption_shapes.py:vit", [], "captions.png"),
    "caption_flickr8k": ("experiments/caption_flickr8k.py", [], "captions.png"),
    "t2i_unet": ("experiments/t2i_shapes.py", [], "generations.png"),
    "t2i_dit": ("experiments/t2i_shapes.py:dit", [], "generations.png"),
}
FLICKR = os.path.join(ROOT, "..", "shared", "data", "flickr8k")


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def final_eval(workdir: str) -> dict | None:
  """The evaluation row at the run's total_steps (None while the run is unfinished)."""
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    return None
  total = json.load(open(cfg_path))["total_steps"]
  rows = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if r.get("step") == total and any(k.startswith("eval/") for k in r)]
  return rows[-1] if rows else None


def train(name: str, workdir: str, retrain: bool, extra: list[str]) -> tuple[dict, float, bool]:
  config, overrides, _ = RUNS[name]
  if retrain:
    shutil.rmtree(workdir, ignore_errors=True)
  t0 = time.time()
  trained = final_eval(workdir) is None
  if trained:
    cmd = [sys.executable, "-m", "mmjax.main", "--config", config, "--workdir", workdir,
           "--config.progress_bar=False", *overrides, *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
  row = final_eval(workdir)
  if row is None:
    raise SystemExit(f"{workdir}: the run ended without a final evaluation; see its metrics.jsonl")
  return row, time.time() - t0, trained


def guidance_sweep(workdir: str, guidances: list[float], clip_workdir: str) -> dict[float, dict]:
  """The generation evaluator on the final checkpoint of a text-to-image run at each guidance weight."""
  import ml_collections
  from mmjax.evals import runner
  from mmjax.train import loop
  config = ml_collections.ConfigDict(json.load(open(os.path.join(workdir, "config.json"))))
  trainer = loop.Trainer(config, workdir)
  out = {}
  for w in guidances:
    cfg = config.copy_and_resolve_references()
    cfg.evals.generation.gen_guidance = w
    cfg.evals.generation.clip_score_workdir = clip_workdir
    print(f"  {os.path.basename(workdir)}: guidance {w:g}", flush=True)
    out[w] = runner.run(cfg, trainer.state.params, model=trainer.model, tokenizer=trainer.tokenizer,
                        mesh=trainer.mesh, workdir=None)
  return out


def caption_rows(res: dict) -> list[str]:
  lines = ["## Image captioning on shapes (experiments/caption_shapes.py)", "",
           "Greedy captions of the first 500 test images; the attributes are parsed back from the words; one "
           "reference caption per image (16 phrasings exist, so BLEU/CIDEr understate a correct caption). Chance: "
           "shape 1/6, colour 1/8, size 1/3, position 1/9, all four 1/1296.", "",
           "| image encoder | steps | exact match | shape | colour | size | position | BLEU-4 | CIDEr-D |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, label in (("caption_cnn", "CNN, 3 stride-2 stages -> 8x8 tokens (default)"),
                      ("caption_vit", "ViT, 2 layers, 8 px patches (`:vit`)")):
    if name not in res:
      continue
    r, s = res[name]["row"], res[name]["steps"]
    g = lambda k: r[f"eval/captioning/{k}"]  # noqa: E731
    lines.append(f"| {label} | {s} | **{100 * g('exact_match'):.1f} %** | {100 * g('shape_acc'):.1f} % | "
                 f"{100 * g('colour_acc'):.1f} % | {100 * g('size_acc'):.1f} % | {100 * g('position_acc'):.1f} % | "
                 f"{g('bleu4'):.3f} | {g('cider'):.2f} |")
  if "caption_flickr8k" in res:
    r = res["caption_flickr8k"]["row"]
    lines += ["", "## Image captioning on Flickr8k (experiments/caption_flickr8k.py)", "",
              "Beam 3 on the 1,000 test images against their 5 references; trained from scratch on the 6,000 train "
              "images at 64 px (published captioners start from ImageNet CNNs and reach BLEU-4 about 0.2).", "",
              "| steps | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr-D |", "|---|---|---|---|---|---|",
              f"| {res['caption_flickr8k']['steps']} | " + " | ".join(
                  f"{r[f'eval/captioning/bleu{n}']:.3f}" for n in range(1, 5)) +
              f" | {r['eval/captioning/cider']:.2f} |"]
  return lines


def t2i_rows(res: dict, sweeps: dict, clip_name: str) -> list[str]:
  lines = ["## Text-to-image on shapes (experiments/t2i_shapes.py)", "",
           "Rectified flow, 20 Euler steps, one image per caption of the first 480 one-object test scenes; a CNN "
           "judge trained on real train images says which shape and colour each generated image shows (it scores "
           "the real test images in the last rows). CLIP score: 100 x mean max(cos, 0) with the CLIP of "
           f"experiments/clip_shapes.py ({clip_name}); images upsampled to its 64 px.", "",
           "| denoiser | steps | guidance w | shape | colour | both | CLIP score |", "|---|---|---|---|---|---|---|"]
  last = None
  for name, label in (("t2i_unet", "U-Net (default)"), ("t2i_dit", "DiT, 4 px patches (`:dit`)")):
    if name not in sweeps:
      continue
    for w, r in sweeps[name].items():
      g = lambda k: r[f"generation/{k}"]  # noqa: E731
      clip = f"{g('clip_score'):.1f}" if "generation/clip_score" in r else "-"
      lines.append(f"| {label} | {res[name]['steps']} | {w:g} | {g('shape_acc'):.3f} | {g('colour_acc'):.3f} | "
                   f"{g('both_acc'):.3f} | {clip} |")
      last = r
  if last is not None:
    g = lambda k: last[f"generation/{k}"]  # noqa: E731
    real = f"{g('clip_score_real'):.1f}" if "generation/clip_score_real" in last else "-"
    mism = f"{g('clip_score_mismatched'):.1f}" if "generation/clip_score_mismatched" in last else "-"
    lines += [f"| real test images | - | - | {g('judge_real_shape_acc'):.3f} | {g('judge_real_colour_acc'):.3f} | "
              f"{g('judge_real_both_acc'):.3f} | {real} |",
              f"| real images, another scene's caption | - | - | - | - | - | {mism} |",
              f"| chance | - | - | {g('chance_shape'):.3f} | {g('chance_colour'):.3f} | {g('chance_both'):.3f} | - |"]
  return lines


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "generation"))
  ap.add_argument("--runs", default=",".join(RUNS))
  ap.add_argument("--retrain", action="store_true")
  ap.add_argument("--guidance", default="1,3,6")
  ap.add_argument("--table", default=TABLE)
  args = ap.parse_args()
  names = [n for n in args.runs.split(",") if n]
  unknown = [n for n in names if n not in RUNS]
  if unknown:
    raise SystemExit(f"unknown run(s) {unknown}; known: {', '.join(RUNS)}")
  if "caption_flickr8k" in names and not os.path.isdir(FLICKR) and not os.environ.get("MMJAX_RAW_DATA"):
    print(f"skipping caption_flickr8k: {FLICKR} is missing", flush=True)
    names.remove("caption_flickr8k")
  t_start = time.time()
  res = {}
  for name in names:
    wd = os.path.join(args.workdir, name)
    row, seconds, trained = train(name, wd, args.retrain, [])
    res[name] = {"row": row, "steps": row["step"], "seconds": seconds, "workdir": wd, "trained": trained}
    png = RUNS[name][2]
    if png and os.path.exists(os.path.join(wd, png)):
      os.makedirs(FIGURES, exist_ok=True)
      shutil.copyfile(os.path.join(wd, png), os.path.join(FIGURES, f"generation_{name}.png"))
  clip_wd = res["clip"]["workdir"] if "clip" in res else ""
  clip_name = (f"{res['clip']['steps']} steps, zero-shot shape {res['clip']['row']['eval/zero_shot/shape']:.1f} %, "
               f"colour {res['clip']['row']['eval/zero_shot/colour']:.1f} %") if "clip" in res else "not run"
  guidances = [float(w) for w in args.guidance.split(",")]
  sweeps = {n: guidance_sweep(res[n]["workdir"], guidances, clip_wd) for n in ("t2i_unet", "t2i_dit") if n in res}
  command = "python experiments/reports/generation.py" + (f" --runs {args.runs}" if args.runs != ",".join(RUNS)
                                                           else "")
  n_trained = sum(r["trained"] for r in res.values())
  lines = ["# Translation and generation: captioning and text-to-image", "",
           f"Generated by `{command}` on {datetime.date.today().isoformat()} ({(time.time() - t_start) / 60:.0f} min "
           f"here: {n_trained} of the {len(res)} runs trained now, the others' finished workdirs reused; each run is "
           "`python -m mmjax.main --config <experiment> --workdir <dir>` with the experiment's own settings).", ""]
  lines += caption_rows(res) + [""] + t2i_rows(res, sweeps, clip_name) + [""]
  figs = [f"generation_{n}.png" for n in names if RUNS[n][2] and os.path.exists(os.path.join(FIGURES,
                                                                                             f"generation_{n}.png"))]
  if figs:
    lines += ["Figures (the evaluators' PNGs of the final checkpoints): " + ", ".join(
        f"[{f}](figures/{f})" for f in figs) + ".", ""]
  with open(args.table + ".tmp", "w") as f:
    f.write("\n".join(lines))
  os.replace(args.table + ".tmp", args.table)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
