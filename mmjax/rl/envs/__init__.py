"""Pure-JAX environments for multimodal RL."""
from mmjax.rl.envs.shapes_world import ShapesWorld, State, WorldConfig, config_from

__all__ = ["ShapesWorld", "State", "WorldConfig", "config_from"]
