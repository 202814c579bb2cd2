"""Multimodal RL and embodied language grounding: a pure-JAX ShapesWorld (`envs/`), an instruction-conditioned
actor-critic (`networks.py`), PPO as one jitted update (`ppo.py`), grounding evaluation (`grounding.py`) and the
trainer that `mmjax.main` runs when a config says `trainer = "ppo"` (`trainer.py`)."""
