"""VQA on shapes (mmjax/data/vqa_shapes.py): questions about colour, shape, count, existence and relative position
generated from the scenes' labels; model "vqa" (mmjax/models/vqa.py: question tokens cross-attend to image patch
tokens through mmjax.fusion's cross_attention) trained with "classify" over the 21 answers; evaluator "vqa"
(accuracy per question type and the answer prior).

  python -m mmjax.main --config experiments/vqa_shapes.py:image_question --workdir runs/vqa_iq
  python -m mmjax.main --config experiments/vqa_shapes.py:question_only --workdir runs/vqa_q      (the baseline)
  python -m mmjax.main --config experiments/vqa_shapes.py:runlocal --workdir /tmp/x                (seconds)

Variants (the first argument): image_question (default) and question_only (same model without the image branch, the
same steps, batch and optimiser). `steps=N` sets the training steps. The table:
experiments/reports/colearning_generative.py --part vqa.
"""
from mmjax import config as config_lib
from mmjax.data.vqa_shapes import ANSWERS, VOCAB

VARIANTS = {"image_question": ("image", "question"), "question_only": ("question",)}


def model_config(modalities, width: int = 64, heads: int = 4, fusion_depth: int = 2, head_hidden: int = 128) -> dict:
  return dict(name="vqa", modalities=modalities, num_answers=len(ANSWERS), vocab_size=len(VOCAB), width=width,
              num_heads=heads, patch_size=4, text_depth=1, post_depth=1, head_hidden=head_hidden,
              fusion="cross_attention", fusion_kwargs={"depth": fusion_depth, "mlp_ratio": 2.0})


def get_config(arg: str | None = None):
  variant, rest = config_lib.split_method_arg(arg, VARIANTS, "image_question")
  arg = config_lib.parse_arg(rest, steps=1500)
  c = config_lib.base_config()
  c.objective = "classify"
  c.total_steps = arg.steps
  c.batch_size = 64
  c.log_every = 100
  c.checkpoint_every = arg.steps
  c.optim.update(dict(name="adamw", lr=1e-3, weight_decay=1e-4, warmup_steps=100, schedule="cosine",
                      clip_grad_norm=1.0))
  c.data.name = "vqa_shapes"
  c.data.image_size = 32
  c.data.min_shapes = 2
  c.data.max_shapes = 4
  c.data.question_length = 12
  c.model = model_config(VARIANTS[variant])
  c.evals.names = "vqa"
  c.evals.vqa.split = "test"
  c.evals.num_examples = 2000
  c.evals.batch_size = 250
  c.evals.vqa.prior_train_examples = 5000
  if arg.runlocal:
    config_lib.runlocal(c)
    c.model = model_config(VARIANTS[variant], width=16, heads=2, fusion_depth=1, head_hidden=16)
    c.evals.vqa.prior_train_examples = 32
  return c
