"""RL report (issue 13): grounding of a PPO agent in ShapesWorld, its language-free baseline, an episode figure
and the environment / PPO throughput.

  .venv/bin/python experiments/reports/rl.py [--workdir runs/rl_shapes_world --blind_workdir
      runs/rl_shapes_world_blind --episodes 1000 --no_bench]

Each agent is trained with the one RL entry point's trainer (`PPOTrainer`, experiments/rl_shapes_world.py, and
its `:blind` variant, whose agent never sees the instruction); a workdir that already holds the finished run is
only evaluated (train first with `python -m mmjax.main --config experiments/rl_shapes_world.py --workdir ...`).
Evaluation: `mmjax.rl.grounding` on --episodes fresh episodes per condition (seen colour-shape pairs, held-out
pairs never named in training; with and without the instruction; greedy and sampled policies).
Writes experiments/tables/rl.md and experiments/tables/figures/rl_episode.png, rl_training.png; the benchmark
lines come from `benchmarks/rl_env.py` run here (short settings) unless --no_bench.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax.rl.grounding import grounding_report, record_episode  # noqa: E402
from mmjax.rl.trainer import PPOTrainer  # noqa: E402
from mmjax.train.metrics import read_metrics  # noqa: E402

TABLES = os.path.join(ROOT, "experiments", "tables")
FIGURES = os.path.join(TABLES, "figures")
EXPERIMENT = os.path.join(ROOT, "experiments", "rl_shapes_world.py")
ACTIONS = ("up", "down", "left", "right")


def train_or_load(arg: str, workdir: str) -> tuple[PPOTrainer, dict]:
  config = config_lib.load_experiment(EXPERIMENT, arg)
  config.progress_bar = False
  trainer = PPOTrainer(config, workdir)
  if trainer.start_step < config.total_steps:
    print(f"rl report: training {arg or 'default'} in {workdir} from update {trainer.start_step}", flush=True)
    trainer.train()
  rows = [r for r in read_metrics(workdir) if "train/loss" in r]
  info = {"updates": config.total_steps, "env_steps": config.total_steps * trainer.env_steps_per_update,
          "params": int(trainer.num_params), "train_success_last": rows[-1]["train/success_rate"] if rows else None,
          # from the start of training (config.json is written then; compilation included) to the last update
          "wall_s": rows[-1]["time"] - os.path.getmtime(os.path.join(workdir, "config.json")) if rows else None,
          "curve": [
              (r["train/env_steps"], r["train/success_rate"]) for r in rows]}
  return trainer, info


def fmt(x: float) -> str:
  return f"{100 * x:.1f}"


def episode_figure(trainer: PPOTrainer, path: str) -> list[str]:
  """A held-out episode (the first seed whose instructed greedy episode succeeds in >= 4 steps: an illustration,
  not a sample of typical behaviour), with and without the instruction."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows, lines = [], []
  params = trainer.runner.params
  for seed in range(50):
    _, acts, _, ok, _ = record_episode(trainer.eval_envs["held_out"], trainer.network, params, jax.random.PRNGKey(seed))
    if ok and len(acts) >= 4:
      break
  for split, mask in (("held_out", False), ("held_out", True)):
    env = trainer.eval_envs[split]
    frames, actions, rewards, success, text = record_episode(env, trainer.network, params,
                                                             jax.random.PRNGKey(seed), mask_instruction=mask)
    rows.append((split, mask, frames, actions, success, text))
    lines.append(f"{split} episode (seed {seed}), instruction {'masked' if mask else 'shown'}: \"{text}\" -> actions "
                 f"{[ACTIONS[a] for a in actions]}, {'success' if success else 'failure'}, return {sum(rewards):.2f}")
  cols = max(len(r[2]) for r in rows)
  fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 2.0 * len(rows)), squeeze=False)
  for i, (split, mask, frames, actions, success, text) in enumerate(rows):
    for j in range(cols):
      ax = axes[i, j]
      ax.axis("off")
      if j < len(frames):
        ax.imshow(frames[j], interpolation="nearest")
        ax.set_title("start" if j == 0 else ACTIONS[actions[j - 1]], fontsize=8)
    axes[i, 0].text(-0.1, 0.5, f"{'MASKED' if mask else 'shown'}\n{'success' if success else 'failure'}",
                    transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=8)
  fig.suptitle(f"instruction: \"{rows[0][5]}\" (held-out pair; egocentric view, agent = grey frame at the centre)\n"
               f"top: the agent sees the instruction; bottom: the same agent and episode, instruction masked",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return lines


def curve_figure(curves: dict[str, list], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for name, curve in curves.items():
    if curve:
      x, y = zip(*curve)
      ax.plot(np.asarray(x) / 1e3, y, label=name)
  ax.set_xlabel("environment steps (thousands)")
  ax.set_ylabel("training success rate (sampled policy)")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "rl_shapes_world"))
  ap.add_argument("--blind_workdir", default=os.path.join(ROOT, "runs", "rl_shapes_world_blind"))
  ap.add_argument("--episodes", type=int, default=1000)
  ap.add_argument("--no_bench", action="store_true")
  args = ap.parse_args()
  command = "python experiments/reports/rl.py" + "".join(f" {a}" for a in sys.argv[1:])
  os.makedirs(FIGURES, exist_ok=True)
  t0 = time.time()
  agents = {"PPO + FiLM, with instruction": train_or_load("", args.workdir),
            "PPO, trained without instruction (blind)": train_or_load("blind", args.blind_workdir)}
  results = {}
  for name, (trainer, _) in agents.items():
    results[name] = grounding_report(trainer.eval_envs, trainer.network, trainer.runner.params,
                                     jax.random.PRNGKey(trainer.config.evals.seed), args.episodes,
                                     ("greedy", "sampled"))
  main_trainer, main_info = agents["PPO + FiLM, with instruction"]
  cfg = main_trainer.config
  episode_lines = episode_figure(main_trainer, os.path.join(FIGURES, "rl_episode.png"))
  curve_figure({n: i["curve"] for n, (_, i) in agents.items()}, os.path.join(FIGURES, "rl_training.png"))
  bench = []
  if not args.no_bench:
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "rl_env.py"), "--steps", "32",
                          "--repeats", "2", "--ppo_updates", "2"], capture_output=True, text=True, cwd=ROOT)
    bench = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode:
      bench.append({"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"})

  w = cfg.env
  md = [f"Generated by `{command}` on {datetime.date.today().isoformat()} "
        f"({time.time() - t0:.0f} s; load average at the end: {open('/proc/loadavg').read().split()[0]}).", "",
        "# Embodied language grounding: PPO in ShapesWorld (issue 13)", "",
        f"Task: \"go to the <colour> <shape>\" in a {w.grid}x{w.grid} grid with {w.num_distractors} distractors that "
        f"each share the colour or the shape with the target (so only the full instruction identifies it); "
        f"colours {w.colours}, shapes {w.shapes}; held-out pairs ({w.held_out}) are never named in training "
        f"({'but may appear as distractors' if w.held_out_as_distractors else 'nor shown'}). Reward "
        f"{w.success_reward} on reaching the target, -{w.step_penalty} per step; touching a distractor or "
        f"{w.max_steps} steps ends the episode. Observation: egocentric RGB image "
        f"{(2 * w.grid - 1) * w.cell_px}x{(2 * w.grid - 1) * w.cell_px} + instruction word ids. Agent: cell CNN, "
        f"bag-of-words instruction encoder, fusion `{cfg.model.fusion}`, {main_info['params']:,} parameters; "
        f"PPO {cfg.ppo.num_envs} envs x {cfg.ppo.num_steps} steps per update, {cfg.ppo.num_epochs} epochs x "
        f"{cfg.ppo.num_minibatches} minibatches, lr {cfg.ppo.lr} (linear decay), {cfg.total_steps} updates.", "",
        f"Success rate (%) over {args.episodes} fresh episodes per cell (chance of walking to one of the "
        f"{1 + w.num_distractors} objects at random: {100 / (1 + w.num_distractors):.0f} %). "
        f"\"masked\": the same agent with every instruction token replaced by padding.", "",
        "| agent | policy | seen pairs | held-out pairs | seen, masked | held-out, masked | train env steps | "
        "train wall time (s) |",
        "|---|---|---|---|---|---|---|---|"]
  for name, (trainer, info) in agents.items():
    wall = f"{info['wall_s']:.0f}" if info["wall_s"] else "-"
    for policy in ("greedy", "sampled"):
      r = results[name]
      md.append(f"| {name} | {policy} | {fmt(r[f'{policy}/seen_success'])} | {fmt(r[f'{policy}/held_out_success'])} "
                f"| {fmt(r[f'{policy}/seen_masked_success'])} | {fmt(r[f'{policy}/held_out_masked_success'])} | "
                f"{info['env_steps']:,} | {wall} |")
  md += ["", "Training runs (wall time under the shared machine's load, 2 cores shared by several jobs): "
         f"`python -m mmjax.main --config experiments/rl_shapes_world.py --workdir {os.path.relpath(args.workdir, ROOT)}`"
         f" and `--config experiments/rl_shapes_world.py:blind --workdir "
         f"{os.path.relpath(args.blind_workdir, ROOT)}`.", "",
         "![episode](figures/rl_episode.png)", "", *[f"- {line}" for line in episode_lines], "",
         "![training](figures/rl_training.png)", ""]
  if bench:
    md += ["Throughput (`benchmarks/rl_env.py --steps 32 --repeats 2 --ppo_updates 2`; random actions, rendering "
           "included; measured under the load shown, so these are lower bounds for an idle machine):", "", "```"]
    md += [json.dumps(b) for b in bench] + ["```", ""]
  with open(os.path.join(TABLES, "rl.md"), "w") as f:
    f.write("\n".join(md))
  print("\n".join(md))


if __name__ == "__main__":
  main()
