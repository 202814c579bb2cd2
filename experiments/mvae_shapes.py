"""MVAE (Wu & Goodman 2018) on one-object shapes scenes: image (32 x 32) + structured labels (shape, colour, size,
grid position), product-of-experts posterior with the prior expert, sub-sampled ELBO (joint + image + labels).

  python -m mmjax.main --config experiments/mvae_shapes.py --workdir runs/mvae_shapes
  python -m mmjax.main --config experiments/mvae_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)

Model mmjax/models/mvae.py, objective "mvae" (mmjax/objectives/mvae.py), evaluator "mvae"
(mmjax/evals/generative_evals.py): test -ELBOs in nats (joint, image only, labels only) against a per-pixel Gaussian
and the uniform-labels baselines; labels -> image generation judged by the CNN judge of mmjax/evals/generation.py
against samples from the prior; image -> labels accuracy; mvae_generations.png in the workdir.
The table: experiments/reports/colearning_generative.py --part mvae.
"""
from mmjax import config as config_lib


def model_config(latent_dim: int = 16, channels=(32, 64, 64), hidden: int = 256, image_size: int = 32,
                 cross_image_weight: float = 1.0) -> dict:
  # cross_image_weight: not in the paper (0 = the paper's objective). With the paper's objective the image decoder
  # only sees codes of posteriors that include the image expert, and labels -> image was at chance on colour and
  # shape (the image expert encodes only position and size at this budget); 1 adds log p(image | z ~ q(z|labels))
  # to ELBO_labels (still a bound on log p(image, labels); see mmjax/objectives/mvae.py).
  return dict(name="mvae", image_size=image_size, latent_dim=latent_dim, channels=channels, hidden=hidden,
              attributes=("shape", "colour", "size", "position"), label_weight=50.0, beta=1.0,
              image_log_scale_init=-2.5, learn_image_scale=True, cross_image_weight=cross_image_weight)


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, steps=2500)
  c = config_lib.base_config()
  c.objective = "mvae"
  c.total_steps = arg.steps
  c.batch_size = 64
  c.log_every = 100
  c.checkpoint_every = arg.steps
  c.optim.update(dict(name="adamw", lr=1.5e-3, weight_decay=0.0, warmup_steps=100, schedule="cosine",
                      clip_grad_norm=0.0))
  c.data.image_size = 32
  c.data.min_shapes = 1
  c.data.max_shapes = 1
  c.data.context_length = 24
  c.model = model_config()
  c.evals.names = "mvae"
  c.evals.num_examples = 1000
  c.evals.batch_size = 250
  c.evals.mvae.gen_seed = 0
  c.evals.mvae.gen_images = 12
  c.evals.mvae.judge_train_examples = 4000
  c.evals.mvae.judge_steps = 400
  c.evals.mvae.elbo_samples = 4
  c.evals.mvae.baseline_train_examples = 4000
  if arg.runlocal:
    config_lib.runlocal(c)
    c.model = model_config(latent_dim=4, channels=(8, 8), hidden=16, image_size=32)
    c.evals.mvae.gen_images = 4
    c.evals.mvae.judge_train_examples = 32
    c.evals.mvae.judge_steps = 2
    c.evals.mvae.elbo_samples = 1
    c.evals.mvae.baseline_train_examples = 32
  return c
