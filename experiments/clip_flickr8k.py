"""CLIP (Radford et al. 2021) trained from scratch on Flickr8k (Hodosh et al. 2013): 6,000 training images with
5 captions each; evaluated by image<->text retrieval R@1/5/10 on the 1k test images (5k captions) and zero-shot
CIFAR-10 accuracy (CLIP's 18 prompt templates).

  python -m mmjax.data.prepare flickr8k && python -m mmjax.data.prepare cifar10_test    # optional: done on first use
  python -m mmjax.main --config experiments/clip_flickr8k.py --workdir runs/clip_flickr8k
  python experiments/reports/flickr8k_retrieval.py runs/clip_flickr8k runs/siglip_flickr8k

Sized for ~25 minutes on 2 CPU cores (64 px images, a 4-layer ViT-S/8-like tower); on a GPU raise image_size to
128, the towers' width/depth and total_steps. Raw files: ../shared/data/flickr8k (or --config.data.manual_dir).
"""
from mmjax import config as config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.objective = "clip"
  c.total_steps = 2000
  c.batch_size = 128
  c.log_every = 50
  c.checkpoint_every = 500
  c.eval_every = 1000
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 200
  c.optim.weight_decay = 0.2
  c.data.name = "flickr8k"
  c.data.image_size = 64
  c.data.context_length = 32
  c.data.vocab_size = 4096
  c.data.crop_scale = (0.6, 1.0)
  c.data.num_workers = 0
  c.model.embed_dim = 128
  c.model.vision = dict(image_size=64, patch_size=8, width=192, depth=4, num_heads=3, mlp_ratio=4.0, pool="cls")
  c.model.text = dict(vocab_size=4096, context_length=32, width=192, depth=3, num_heads=3, mlp_ratio=4.0)
  c.evals.num_examples = 1000                  # the whole Flickr8k test split: 1k images, 5k captions
  c.evals.batch_size = 250
  c.evals.clip.zero_shot_data = "cifar10_test"
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 24                       # generated raw files in the real format: never skips
    c.data.image_size = 32
    c.data.vocab_size = 512
    c.model.embed_dim = 32
    c.model.vision = dict(image_size=32, patch_size=8, width=32, depth=1, num_heads=2, mlp_ratio=2.0, pool="cls")
    c.model.text = dict(vocab_size=512, context_length=32, width=32, depth=1, num_heads=2, mlp_ratio=2.0)
    c.evals.num_examples = 6
  return c
