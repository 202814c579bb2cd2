"""Image captioning (ViT encoder + cross-attending Transformer decoder, mmjax.models.captioner) on the embedded
shapes data, trained with teacher-forced cross-entropy (objective "caption").

  python -m mmjax.main --config experiments/caption_shapes.py --workdir runs/caption_shapes
  python -m mmjax.main --config experiments/caption_shapes.py:vit --workdir runs/caption_shapes_vit   (ViT encoder)

The default image encoder is a small CNN whose 8 x 8 feature map is the decoder's memory (model.vision.kind="cnn");
`:vit` uses a 2-layer ViT with 8 px patches instead, which confuses small stars, triangles and diamonds.
  python -m mmjax.main --config experiments/caption_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)

Evals ("captioning", mmjax/evals/captioning.py): greedy captions of the first `evals.num_examples` test images,
corpus BLEU-1..4 and CIDEr-D against the reference caption, the exact match of the (size, colour, shape,
position) read back from each caption, and `captions.png` in the workdir; "masked" gives the held-out
teacher-forced loss and token accuracy (it evaluates any per-example objective).
"""
import ml_collections

from mmjax import config as config_lib


def model_config(image_size: int = 64, patch_size: int = 8, width: int = 128, depth: int = 2, heads: int = 4,
                 dec_width: int = 128, dec_depth: int = 2, vocab_size: int = 512,
                 context_length: int = 24, encoder: str = "vit",
                 channels: tuple[int, ...] = (32, 64, 128)) -> ml_collections.ConfigDict:
  vision = (dict(kind="cnn", image_size=image_size, channels=channels, width=width, group_norm=True)
            if encoder == "cnn" else
            dict(image_size=image_size, patch_size=patch_size, width=width, depth=depth, num_heads=heads,
                 mlp_ratio=4.0))
  return ml_collections.ConfigDict(dict(
      name="captioner",
      vision=vision,
      decoder=dict(vocab_size=vocab_size, context_length=context_length, width=dec_width, depth=dec_depth,
                   num_heads=heads, mlp_ratio=4.0),
      tie_embeddings=True))


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, vit=False)
  c = config_lib.base_config()
  c.objective = "caption"
  c.total_steps = 1000
  c.batch_size = 64
  c.log_every = 50
  c.checkpoint_every = 500
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 0.05
  c.data.image_size = 64
  c.data.context_length = 24
  c.data.vocab_size = 512
  c.model = model_config(encoder="vit" if arg.vit else "cnn")
  c.evals.names = "captioning,masked"
  c.evals.num_examples = 500
  c.evals.batch_size = 250
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.image_size = 32
    c.model = model_config(image_size=32, width=32, depth=1, heads=2, dec_width=32, dec_depth=1,
                           encoder="vit" if arg.vit else "cnn", channels=(8, 16))
  return c
