"""Text-to-image on the embedded shapes data: rectified flow / flow matching (objective "flow_matching") with a
small DiT conditioned on a bidirectional text transformer and classifier-free guidance
(mmjax/models/text_to_image.py).

  python -m mmjax.main --config experiments/t2i_shapes.py --workdir runs/t2i_shapes
  python -m mmjax.main --config experiments/t2i_shapes.py:dit --workdir runs/t2i_shapes_dit   (the DiT backbone)

The default denoiser is a small conditional U-Net (model.backbone="unet", mmjax/layers/unet.py); `:dit` uses the
DiT on 4 px patches.
  python -m mmjax.main --config experiments/t2i_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)

Evals ("generation", mmjax/evals/generation.py): one generated image per test caption (Euler sampler, guidance
evals.generation.gen_guidance), judged by a CNN trained on real shapes images: shape / colour / both accuracy vs
chance, the judge's accuracy on the real test images, and generations.png in the workdir.
"""
import ml_collections

from mmjax import config as config_lib


def model_config(image_size: int = 32, patch_size: int = 4, width: int = 128, depth: int = 4, heads: int = 4,
                 text_width: int = 64, text_depth: int = 2, vocab_size: int = 512,
                 context_length: int = 24, backbone: str = "unet",
                 unet_channels: tuple[int, ...] = (16, 32, 64)) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="text_to_image", image_size=image_size, patch_size=patch_size, width=width, depth=depth,
      num_heads=heads, mlp_ratio=4.0, cross_attention=True, cond_drop_prob=0.1, backbone=backbone,
      unet_channels=unet_channels,
      text=dict(vocab_size=vocab_size, context_length=context_length, width=text_width, depth=text_depth,
                num_heads=heads, mlp_ratio=4.0, causal=False)))


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, dit=False)
  c = config_lib.base_config()
  c.objective = "flow_matching"
  c.total_steps = 1500
  c.batch_size = 64
  c.log_every = 50
  c.checkpoint_every = 1000
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.0
  c.data.image_size = 32
  c.data.context_length = 24
  c.data.vocab_size = 512
  c.model = model_config(backbone="dit" if arg.dit else "unet")
  c.evals.names = "generation"
  c.evals.num_examples = 480
  c.evals.batch_size = 120
  c.evals.generation.gen_steps = 20
  c.evals.generation.gen_guidance = 3.0
  c.evals.generation.gen_seed = 0
  c.evals.generation.gen_images = 12
  c.evals.generation.judge_train_examples = 4000
  c.evals.generation.judge_steps = 400
  c.evals.generation.clip_score_workdir = ""   # a CLIP workdir (e.g. of experiments/clip_shapes.py) adds the CLIP score
  if arg.runlocal:
    config_lib.runlocal(c)
    c.model = model_config(width=32, depth=1, heads=2, text_width=32, text_depth=1,
                           backbone="dit" if arg.dit else "unet", unet_channels=(8, 16))
    c.evals.generation.gen_steps = 2
    c.evals.generation.gen_images = 4
    c.evals.generation.judge_train_examples = 32
    c.evals.generation.judge_steps = 2
  return c
