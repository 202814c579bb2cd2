"""CMU-MOSI fusion table, robustness curves and Deep CCA -> experiments/tables/mosi.md + figures.

  .venv/bin/python experiments/reports/mosi.py [--data_dir /tmp/tfds_mosi] [--seeds 5] [--epochs 20] [--quick]

Data: the MOSI TFDS builder (mmjax/data/builders/mosi.py) over ../shared/data/mosi: utterance-level text (100),
audio (73) and video (100) feature vectors of Poria et al. 2017, binary sentiment, train 1447 / test 752 utterances
(62 / 31 videos). Features are standardised with train statistics. Every run trains for a fixed number of epochs and
its final model is scored on test: a validation split cut from the train videos cannot select models, because the
text / video feature extractors were fitted on the train utterances (the report measures this: held-out train
videos score far above test). 9 train videos (fixed seed) are held out only for that diagnostic and for DCCA.
Models: mmjax.models.FusionClassifier (per-modality encoders + a fusion from mmjax.fusion + MLP head) trained with the
"classify" objective through mmjax.train.step.make_train_step and mmjax.train.optim.make_optimizer, the training
loop's own step and optimizer, run by the one loop body (mmjax.train.run with an ArrayTask: MOSI fits in memory,
so batches are drawn from NumPy arrays, seeded shuffles).
Each method runs with 5 seeds (init, dropout and batch order); the table gives mean ± std of binary accuracy and
weighted F1 on the test split.

Robustness (mmjax/evals/robustness.py, MultiBench's protocol): every trained model is re-scored on test data whose
one modality is corrupted at levels 0, 0.1, ..., 1 (vector noise: N(0, p²) on the standardised features and each
entry dropped with probability p); relative robustness = area under the curve; effective robustness vs late fusion.

Deep CCA (mmjax/alignment/cca.py): text vs audio. Linear CCA (ridge chosen on the held-out train videos) vs Deep CCA
(model "deep_cca": two MLPs; objective "dcca": -sum of the top-k canonical correlations; full-batch AdamW through
the loop body, the step with the best held-out objective kept by config.select_best); both are
fitted on the other 53 train videos and their k canonical correlations are measured on the test split (for DCCA:
linear CCA of the learned projections fitted on train outputs, applied to test outputs).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax.alignment import cca  # noqa: E402
from mmjax.data import builders  # noqa: E402
from mmjax.encoders.mlp import MLPEncoder  # noqa: E402
from mmjax.evals import robustness as rb  # noqa: E402
from mmjax.models import build_model  # noqa: E402
from mmjax.objectives import get_objective  # noqa: E402
from mmjax.train import best as best_lib  # noqa: E402
from mmjax.train import run as run_lib  # noqa: E402
from mmjax.train.arrays import ArrayTask, array_config  # noqa: E402
from mmjax.train.optim import make_optimizer  # noqa: E402
from mmjax.train.state import TrainState  # noqa: E402
from mmjax.train.step import make_train_step  # noqa: E402

TABLE = os.path.join(ROOT, "experiments", "tables", "mosi.md")
FIGURES = os.path.join(ROOT, "experiments", "tables", "figures")
MODALITIES = ("text", "audio", "video")
HELD_VIDEOS = 9

# display name -> FusionClassifier fields (num_classes=2, dropout=0.2 are added): the models of
# experiments/mosi_fusion.py (the same runs through `python -m mmjax.main --config experiments/mosi_fusion.py:<key>`).
_EXPERIMENT = config_lib.load_experiment_module(os.path.join(ROOT, "experiments", "mosi_fusion.py"))
_NAMES = {"text": "text only", "audio": "audio only", "video": "video only", "early": "early (concat inputs)",
          "late": "late (weighted concat)", "tfn": "TFN", "lmf": "LMF (rank 4)", "gated": "gated (GMU)",
          "mult": "MulT-style attention"}
METHODS = {_NAMES[key]: fields for key, fields in _EXPERIMENT.METHODS.items()}
LATE = "late (weighted concat)"
# MultiBench (Liang et al. 2021), CMU-MOSI binary accuracy (%), as listed in the `performance` table of
# github.com/pliang279/MultiBench eval_scripts/robustness.py: EF and LF are the means of their GRU and Transformer
# variants there ((73.2 + 78.8) / 2 and (75.2 + 79.6) / 2); MultiBench uses the aligned word-level CMU-MOSI
# sequences of the CMU-MultimodalSDK (GloVe / COVAREP / Facet), not these utterance-level vectors.
MULTIBENCH = {"text only": "74.2", "audio only": "65.5", "video only": "66.3",
              "early (concat inputs)": "76.0 (73.2 GRU / 78.8 Transformer)",
              "late (weighted concat)": "77.4 (75.2 GRU / 79.6 Transformer)", "MulT-style attention": "83.0 (MulT)"}


# ------------------------------------------------------------------------------------------------ data
def load(data_dir: str) -> dict[str, dict[str, np.ndarray]]:
  b = builders.prepare("mosi", data_dir=data_dir)
  out = {}
  for split in ("train", "test"):
    src = b.as_data_source(split)
    rows = [src[i] for i in range(len(src))]
    out[split] = {m: np.stack([r[m] for r in rows]).astype(np.float32) for m in MODALITIES}
    out[split]["label"] = np.asarray([r["label"] for r in rows], np.int32)
    out[split]["video_id"] = np.asarray([r["video_id"].decode() if isinstance(r["video_id"], bytes)
                                         else r["video_id"] for r in rows])
  videos = sorted(set(out["train"]["video_id"]))
  held_videos = set(np.random.default_rng(0).choice(videos, HELD_VIDEOS, replace=False))
  held = np.isin(out["train"]["video_id"], list(held_videos))
  out["fit"] = {k: v[~held] for k, v in out["train"].items()}
  out["heldout"] = {k: v[held] for k, v in out["train"].items()}
  for m in MODALITIES:  # standardise with train statistics (constant features stay 0)
    mu, sd = out["train"][m].mean(0), out["train"][m].std(0)
    sd = np.where(sd < 1e-6, 1.0, sd)
    for split in out:
      out[split][m] = ((out[split][m] - mu) / sd).astype(np.float32)
  return out


def weighted_f1(pred: np.ndarray, label: np.ndarray) -> float:
  """Support-weighted mean of the per-class F1 scores (sklearn's average='weighted')."""
  total = 0.0
  for c in np.unique(label):
    tp = np.sum((pred == c) & (label == c))
    p = tp / max(np.sum(pred == c), 1)
    r = tp / max(np.sum(label == c), 1)
    total += (2 * p * r / (p + r) if p + r else 0.0) * np.mean(label == c)
  return float(total)


# ------------------------------------------------------------------------------------------------ training
def optim_cfg(lr: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name="adamw", lr=lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
                                        warmup_steps=20, schedule="cosine", end_lr_factor=0.0, clip_grad_norm=1.0,
                                        no_decay_regex=r"(bias|scale|weights|rank_weights)$"))


def train_one(method: str, train: dict, seed: int, epochs: int, batch_size: int = 32, lr: float = 1e-3):
  """Trains on `train` for a fixed number of epochs through the one loop body (mmjax.train.run with an ArrayTask:
  epoch e's batch order is the e-th permutation of `np.random.default_rng(seed)`) -> (model, final params, info)."""
  cfg = dict(name="fusion_classifier", num_classes=2, dropout=0.2, **METHODS[method])
  model = build_model(cfg)
  n = len(train["label"])
  steps_per_epoch = n // batch_size
  tx, schedule = make_optimizer(optim_cfg(lr), epochs * steps_per_epoch)
  step_fn = jax.jit(make_train_step(get_objective("classify"), model, tx, schedule))
  rng = jax.random.PRNGKey(seed)
  params = model.init({"params": rng, "dropout": rng}, *[jnp.asarray(train[m][:2]) for m in model.modalities])
  state = init_state(params["params"], tx, jax.random.fold_in(rng, 1))
  with tempfile.TemporaryDirectory(prefix="mosi_run_") as workdir:
    task = ArrayTask(array_config(seed=seed, total_steps=epochs * steps_per_epoch), workdir, state=state,
                     step_fn=step_fn, arrays={k: train[k] for k in [*model.modalities, "label"]},
                     batch_size=batch_size, evaluate=lambda params: {})
    run_lib.train(task)
    params = jax.device_get(task.state.params)
  return model, params, {"final_loss": float(task.last_metrics["loss"]),
                         "train_acc": test_scores(model, params, train)[0]}


def init_state(params, tx, rng) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng)


def test_scores(model, params, split: dict) -> tuple[float, float]:
  logits = np.asarray(jax.jit(lambda p, *xs: model.apply({"params": p}, *xs))(
      params, *[split[m] for m in model.modalities]))
  pred = logits.argmax(-1)
  return float(np.mean(pred == split["label"])), weighted_f1(pred, split["label"])


def robustness_curves(model, params, split: dict) -> dict[str, np.ndarray]:
  predict_jit = jax.jit(lambda p, *xs: model.apply({"params": p}, *xs))
  predict = lambda inputs: predict_jit(params, *[inputs[m] for m in model.modalities])
  inputs = {m: jnp.asarray(split[m]) for m in MODALITIES}
  return {m: rb.robustness_curve(predict, inputs, split["label"], m, noise_fn=rb.vector_noise, seed=1)
          for m in MODALITIES}


# ------------------------------------------------------------------------------------------------ DCCA
CHECK_EVERY = 10  # DCCA: steps between checks of the held-out objective
# DCCA's optimiser: AdamW at a constant 1e-3, weight decay 1e-4 (not on biases), no clipping
DCCA_OPTIM = ml_collections.ConfigDict(dict(name="adamw", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
                                            warmup_steps=0, schedule="constant", clip_grad_norm=0.0,
                                            no_decay_regex=r"bias$"))


def dcca_experiment(data: dict, k: int = 10, seed: int = 0, steps: int = 1500) -> dict:
  a, b = "text", "audio"
  tr, va, te = data["fit"], data["heldout"], data["test"]
  # Linear CCA: ridge picked on validation (sum of the top-k correlations of the train-fitted directions).
  def lin_eval(r, split):
    res = cca.linear_cca(tr[a], tr[b], k=k, r1=r, r2=r)
    u, v = cca.cca_transform(res, split[a], split[b])
    return np.array([np.corrcoef(u[:, i], v[:, i])[0, 1] for i in range(k)])
  ridges = (1e-3, 1e-2, 1e-1, 1.0)
  best_r = max(ridges, key=lambda r: lin_eval(r, va).sum())
  linear = {"ridge": best_r, "train": np.asarray(cca.linear_cca(tr[a], tr[b], k=k, r1=best_r, r2=best_r)
                                                  .correlations).tolist(),
            "held-out": lin_eval(best_r, va).tolist(), "test": lin_eval(best_r, te).tolist()}

  # Deep CCA: two MLPs (hidden 128, output k), full batch, the registered "dcca" objective through the loop's
  # step, optimiser and loop body; the held-out objective every CHECK_EVERY steps keeps the best step.
  model = build_model(dict(name="deep_cca", views=(a, b), hidden=(128,), features=k))
  key1, key2 = jax.random.split(jax.random.PRNGKey(seed))
  params = {"f1": MLPEncoder(hidden=(128,), features=k).init(key1, tr[a][:2])["params"],
            "f2": MLPEncoder(hidden=(128,), features=k).init(key2, tr[b][:2])["params"]}
  objective = get_objective("dcca", None, {"k": k, "ridge": 1e-3})
  tx, schedule = make_optimizer(DCCA_OPTIM, steps)
  step_fn = jax.jit(make_train_step(objective, model, tx, schedule))
  outputs = jax.jit(lambda p, x1, x2: model.apply({"params": p}, x1, x2))
  views = lambda split: {m: jnp.asarray(split[m]) for m in (a, b)}     # noqa: E731
  trj, vaj = views(tr), views(va)
  def objective_of(p, split) -> float:
    return float(-objective.loss_fn(p, split, jax.random.PRNGKey(0), model=model, train=False)[0])
  config = array_config(seed=seed, total_steps=steps, eval_every=CHECK_EVERY, select_best="heldout/dcca_corr")
  with tempfile.TemporaryDirectory(prefix="mosi_dcca_") as workdir:
    task = ArrayTask(config, workdir, state=init_state(params, tx, jax.random.PRNGKey(seed)), step_fn=step_fn,
                     arrays={m: tr[m] for m in (a, b)}, batch_size=len(tr[a]),
                     evaluate=lambda p: {"heldout/dcca_corr": objective_of(p, vaj)})
    run_lib.train(task)
    params, best_step = jax.device_get(task.best_params()), best_lib.read(workdir)["step"]
  h_tr = outputs(params, trj[a], trj[b])
  res = cca.linear_cca(*h_tr, k=k, r1=1e-6, r2=1e-6)

  def deep_eval(split):
    u, v = cca.cca_transform(res, *outputs(params, jnp.asarray(split[a]), jnp.asarray(split[b])))
    return [float(np.corrcoef(np.asarray(u[:, i]), np.asarray(v[:, i]))[0, 1]) for i in range(k)]

  deep = {"best_step": best_step, "train": np.asarray(res.correlations).tolist(), "held-out": deep_eval(va),
          "test": deep_eval(te),
          "objective_train": objective_of(params, trj)}
  return {"views": [a, b], "k": k, "linear": linear, "deep": deep}


# ------------------------------------------------------------------------------------------------ report
def fmt(xs, scale=100.0, digits=1) -> str:
  xs = np.asarray(xs) * scale
  return f"{xs.mean():.{digits}f} ± {xs.std():.{digits}f}"


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--data_dir", default="/tmp/tfds_mosi")
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--epochs", type=int, default=20)
  ap.add_argument("--quick", action="store_true", help="2 seeds, 5 epochs, short DCCA (a smoke run)")
  args = ap.parse_args()
  if args.quick:
    args.seeds, args.epochs = 2, 5
  t0 = time.time()
  data = load(args.data_dir)
  sizes = {s: len(data[s]["label"]) for s in data}
  results, curves = {}, {}
  for method in METHODS:
    runs = []
    for seed in range(args.seeds):
      model, params, info = train_one(method, data["train"], seed, args.epochs)
      acc, f1 = test_scores(model, params, data["test"])
      runs.append(dict(info, acc=acc, f1=f1, curves={m: c.tolist() for m, c in
                                                      robustness_curves(model, params, data["test"]).items()}))
      print(f"{method} seed {seed}: test acc {acc:.4f} f1 {f1:.4f} (train acc {info['train_acc']:.4f}) "
            f"[{time.time() - t0:.0f}s]", flush=True)
    results[method] = runs
    curves[method] = {m: np.mean([r["curves"][m] for r in runs], axis=0) for m in MODALITIES}
  # Diagnostic: trained on 53 of the 62 train videos, scored on the 9 held-out train videos and on test.
  leak = {}
  for method in ("text only", "video only", "audio only", "early (concat inputs)"):
    model, params, _ = train_one(method, data["fit"], 0, args.epochs)
    leak[method] = {"heldout": test_scores(model, params, data["heldout"])[0],
                    "test": test_scores(model, params, data["test"])[0]}
  dcca = dcca_experiment(data, steps=300 if args.quick else 1500)
  elapsed = time.time() - t0

  os.makedirs(FIGURES, exist_ok=True)
  multimodal = [m for m in METHODS if not m.endswith("only")]
  figs = {}
  for mod in MODALITIES:
    shown = multimodal + [f"{mod} only"]
    figs[mod] = rb.plot_robustness(
        {m: curves[m][mod] for m in shown}, os.path.join(FIGURES, f"mosi_robustness_{mod}.png"),
        title=f"CMU-MOSI: noise on {mod} at test time ({args.seeds} seeds)", ylabel="test accuracy",
        stds={m: np.std([r["curves"][mod] for r in results[m]], axis=0) for m in shown})

  cmd = " ".join([".venv/bin/python experiments/reports/mosi.py", *sys.argv[1:]])
  lines = [f"<!-- generated by: {cmd} on {datetime.date.today().isoformat()} ({elapsed / 60:.1f} min, "
           f"{jax.devices()[0].platform}) -->",
           "# CMU-MOSI: fusion methods, robustness, Deep CCA", "",
           "Regenerate with", "", f"    {cmd}", "",
           f"Utterance-level features of Poria et al. 2017 (text 100 / audio 73 / video 100; ../shared/data/mosi), "
           f"binary sentiment, official speaker-independent splits: train {sizes['train']} utterances (62 videos) / "
           f"test {sizes['test']} (31 videos). {args.seeds} seeds per method (init, dropout, batch order), a fixed "
           f"budget of {args.epochs} epochs (AdamW 1e-3, cosine, batch 32, dropout 0.2, weight decay 1e-4), "
           f"not tuned; the final model is scored on test (no model selection: see "
           f"below why a validation split cut from the train videos cannot select). Majority class on test: "
           f"{100 * max(np.mean(data['test']['label']), 1 - np.mean(data['test']['label'])):.1f} %.", "",
           "## Test accuracy and F1", "",
           "| method | accuracy (%) | F1 weighted (%) | train accuracy (%) | MultiBench, its features (%) |",
           "|---|---|---|---|---|"]
  for m in METHODS:
    r = results[m]
    lines.append(f"| {m} | {fmt([x['acc'] for x in r])} | {fmt([x['f1'] for x in r])} | "
                 f"{fmt([x['train_acc'] for x in r])} | {MULTIBENCH.get(m, '–')} |")
  lines += ["", "mean ± std over seeds. The MultiBench column is quoted from MultiBench's own results table "
            "(`performance` in eval_scripts/robustness.py of github.com/pliang279/MultiBench): it uses the aligned "
            "word-level CMU-MOSI sequences (GloVe / COVAREP / Facet) with sequence encoders, so its feature sets and "
            "splits differ from these utterance-level vectors; it is context, not a like-for-like comparison. "
            "MultiBench has no MOSI entry for TFN, LMF or a gated fusion in that table. declare-lab's published "
            "numbers for these exact features (Poria et al. 2017) use context across the utterances of a video "
            "(bc-LSTM) and could not be checked against a stored copy of the paper here, so none are quoted.", "",
            "### Why there is no validation split",
            "",
            f"The text and video features were produced by networks trained on the train utterances (Poria et al. "
            f"2017: text CNN, 3D-CNN), so train-split features are label-fitted. Trained on {sizes['fit']} utterances "
            f"of 53 train videos (seed 0) and scored on the {sizes['heldout']} utterances of the other "
            f"{HELD_VIDEOS} train videos vs the test split:", "",
            "| method | held-out train videos (%) | test (%) |", "|---|---|---|",
            *[f"| {m} | {100 * v['heldout']:.1f} | {100 * v['test']:.1f} |" for m, v in leak.items()], "",
            "## Robustness (MultiBench protocol)", "",
            "Test accuracy as one modality is corrupted at level p (N(0, p²) on the standardised features plus each "
            "entry dropped with probability p), p = 0, 0.1, …, 1; mean over seeds. Relative robustness = area under "
            "the curve; effective robustness = sum over levels of the accuracy above the late-fusion curve shifted "
            "to the method's clean accuracy (MultiBench's definitions, before their max-min normalisation).", "",
            "| method | noise on | clean acc | acc at p=0.5 | acc at p=1 | relative robustness | effective robustness |",
            "|---|---|---|---|---|---|---|"]
  for mod in MODALITIES:
    for m in multimodal + [f"{mod} only"]:
      c = curves[m][mod]
      lines.append(f"| {m} | {mod} | {100 * c[0]:.1f} | {100 * c[5]:.1f} | {100 * c[-1]:.1f} | "
                   f"{rb.relative_robustness(c):.3f} | {rb.effective_robustness(c, curves[LATE][mod]):+.3f} |")
  lines += [""] + [f"![noise on {mod}](figures/{os.path.basename(figs[mod])})" for mod in MODALITIES]
  lin, deep = dcca["linear"], dcca["deep"]
  lines += ["", f"## Deep CCA vs linear CCA ({dcca['views'][0]} vs {dcca['views'][1]}, k = {dcca['k']})", "",
            f"Both fitted on 53 train videos; linear CCA's ridge ({lin['ridge']}) and Deep CCA's stopping step are "
            f"chosen on the 9 held-out train videos (no test data). Linear CCA: ridge {lin['ridge']}. Deep CCA: two MLPs (hidden 128, ReLU, "
            f"output {dcca['k']}), full-batch AdamW 1e-3 on -(sum of the top-{dcca['k']} singular values of "
            f"T = Σ11^-1/2 Σ12 Σ22^-1/2, ridge 1e-3), stopped at step {deep['best_step']} by the held-out "
            f"objective. Canonical correlations of the learned projections, fitted on the training videos (train "
            f"rows) and measured on the test split:", "",
            "| | " + " | ".join(f"ρ{i + 1}" for i in range(dcca["k"])) + " | sum |",
            "|---|" + "---|" * (dcca["k"] + 1)]
  for name, d in (("linear CCA", lin), ("Deep CCA", deep)):
    for split in ("train", "held-out", "test"):
      lines.append(f"| {name}, {split} | " + " | ".join(f"{x:.3f}" for x in d[split]) + f" | {sum(d[split]):.3f} |")
  lines += ["", "Raw per-seed numbers: `experiments/tables/mosi.json`."]
  with open(TABLE, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(ROOT, "experiments", "tables", "mosi.json"), "w") as f:
    json.dump({"results": results, "leak": leak, "dcca": dcca, "sizes": sizes, "args": vars(args)}, f)
  print(f"wrote {TABLE} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
  main()
