"""MAE (He et al. 2022) pretrained on the 6,000 Flickr8k training images (Hodosh et al. 2013), scored by a linear
probe of the frozen encoder on CIFAR-10 (Krizhevsky 2009) test images.

  python -m mmjax.main --config experiments/mae_flickr8k.py --workdir runs/mae_flickr8k
  python -m mmjax.main --config experiments/mae_flickr8k.py --workdir runs/mae_flickr8k_init --config.total_steps=0
  python -m mmjax.main --config experiments/mae_flickr8k.py:runlocal --workdir /tmp/x     (seconds; for tests)
  .venv/bin/python experiments/reports/masked_modeling.py --flickr8k     (reads runs/*flickr8k*: the table)

The second command is the random-init baseline: the same encoder at its initialisation (seed 0), evaluated by the
same probe without a training step. Raw files: ../shared/data/{flickr8k,cifar10_test} (or $MMJAX_RAW_DATA),
prepared on first use. Results: experiments/tables/masked_modeling.md.

Probe (evals/linear_probe.py, `evals.linear_probe.probe_data="cifar10_test"`): the 10,000 CIFAR-10 test images split
by a fixed, class-balanced rule: within each class, files test/<class>/0000-0499.jpg -> probe-train (5,000),
0500-0999 -> probe-test (5,000); the 32 px images are upsampled to the model's 64 px with PIL's bicubic filter;
multinomial logistic regression on standardised features of the unmasked image (the cls token, `model.probe_pool`),
l2 picked on the last 20 % of probe-train (its ranks 400-499 of each class), top-1 accuracy in % on probe-test
(chance 10).
Also: held-out masked-patch loss on the 1k Flickr8k test images, and `reconstruction.png` in the workdir.

Recipe as the paper where it fits (AdamW b = (0.9, 0.95), weight decay 0.05 without decay on norms/biases/tokens,
warmup + cosine, mask ratio 0.75, per-patch normalised pixel targets, sin-cos positions, random-resized crops of
scale (0.2, 1) + horizontal flips, cls-token linear probe). Deviations, to fit < 25 minutes on 2 shared CPU cores:
- 64 px images (Flickr8k is stored at 128 px; read at 64 as experiments/clip_flickr8k.py), patch 8 (64 patches);
- a ViT of width 192, depth 4 (3 heads) and a decoder of width 128, depth 2 instead of ViT-B/L with an 8-block,
  512-wide decoder;
- 500 steps of 128 (10.7 epochs of Flickr8k; measured with two other jobs on the 2 cores: 21 min of compilation
  and training at ~0.4-0.5 steps/s, then 1.4 min of evaluation) instead of 800-1600 ImageNet epochs, hence lr 1e-3
  (as experiments/mae_shapes.py) with 25 warmup steps rather than the 1.5e-4 * B / 256 rule (= 7.5e-5 here), which
  is tuned for hundreds of epochs;
- the probe is logistic regression on standardised features (no BatchNorm, no augmentation, no SGD schedule).
With `--config.model.probe_pool=gap` the probe reads the mean of the patch tokens instead of the cls token; after
this short pretraining that probes better (the table has both).
"""
import ml_collections

from mmjax import config as config_lib


def model_config(image_size: int = 64, patch_size: int = 8, width: int = 192, depth: int = 4, heads: int = 3,
                 decoder_width: int = 128, decoder_depth: int = 2, decoder_heads: int = 4,
                 mlp_ratio: float = 4.0) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="mae", vision=dict(image_size=image_size, patch_size=patch_size),
      encoder=dict(width=width, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio),
      decoder=dict(width=decoder_width, depth=decoder_depth, num_heads=decoder_heads, mlp_ratio=mlp_ratio),
      mask_ratio=0.75, norm_pix_loss=True, pos_embedding="sincos", probe_pool="cls"))


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.objective = "mae"
  c.total_steps = 500
  c.batch_size = 128
  c.log_every = 50
  c.checkpoint_every = 250
  c.eval_every = 0                              # the probe (10k CIFAR images) runs once, at the end
  c.optim.lr = 1e-3
  c.optim.b1, c.optim.b2 = 0.9, 0.95
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 25
  c.optim.no_decay_regex = r"(bias|scale|cls|mask_token|pos_embedding)$"
  c.data.name = "flickr8k"
  c.data.image_size = 64
  c.data.context_length = 32
  c.data.vocab_size = 4096
  c.data.crop_scale = (0.2, 1.0)                # MAE's RandomResizedCrop(scale=(0.2, 1.0))
  c.data.flip = True
  c.data.num_workers = 0
  c.model = model_config()
  c.evals.names = "linear_probe,masked,reconstruction"
  c.evals.linear_probe.probe_data = "cifar10_test"           # class halves: 5,000 probe-train / 5,000 probe-test images
  c.evals.linear_probe.probe_tasks = "label"
  c.evals.linear_probe.probe_train_examples = 5000
  c.evals.num_examples = 1000                   # the Flickr8k test split: held-out masked loss
  c.evals.batch_size = 250
  c.evals.reconstruction.recon_images = 6
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 24                        # generated raw files in the real format (flickr8k, cifar10_test)
    c.data.image_size = 32
    c.data.vocab_size = 512
    c.model = model_config(image_size=32, width=32, depth=1, heads=2, decoder_width=16, decoder_depth=1,
                           decoder_heads=2, mlp_ratio=2.0)
    c.evals.num_examples = 6
    c.evals.reconstruction.recon_images = 4
  return c
