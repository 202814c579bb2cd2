"""Feature distillation of a frozen CLIP into a small CLIP student (objective "clip_feature_distill") on shapes.

  python -m mmjax.main --config experiments/clip_shapes.py --workdir runs/clip_teacher       (the teacher)
  python -m mmjax.main --config experiments/distill_clip_shapes.py \
      --config.model.teacher_workdir=runs/clip_teacher --workdir runs/clip_student
  python -m mmjax.main --config experiments/distill_clip_shapes.py:clip --workdir runs/clip_student_plain
  python -m mmjax.main --config experiments/distill_clip_shapes.py:distill,runlocal --workdir /tmp/x  (random teacher)

Methods (the argument; default distill):
  distill: model "clip_distill_student" (mmjax/models/distill.py): a small CLIP (ViT patch 16, width 64, 1 layer;
           text width 64, 1 layer; embed 64) + a linear map to the teacher's 128-d space, trained to match the
           teacher's unit-norm image and text embeddings (`objective_kwargs.kind`: cosine | mse | contrastive, default
           contrastive at τ = 0.07) plus 0.1 x its own CLIP loss. Any CLIP works as the teacher:
           `model.teacher_workdir` (an mmjax CLIP workdir) or `model.teacher_open_clip` (an OpenCLIP checkpoint file,
           via mmjax/interop/open_clip.py; then use objective_kwargs.towers=("image",) unless the tokens are
           OpenCLIP's).
           The text tokens must be the teacher's: copy the teacher workdir's tokenizer.json into the student workdir
           before training (the loop then uses it), as experiments/reports/colearning_transfer.py does.
  clip:    the same small CLIP trained with the plain CLIP loss (the baseline).
Both: 300 steps of 128, AdamW 2e-3; the "clip" evaluator (zero-shot shape / colour, retrieval) in the teacher's space.
"""
from mmjax import config as config_lib

METHODS = ("distill", "clip")


def student(tiny: bool = False) -> dict:
  if tiny:
    return dict(embed_dim=16, vision=dict(image_size=32, patch_size=16, width=16, depth=1, num_heads=2, mlp_ratio=2.0,
                                          pool="cls"),
                text=dict(vocab_size=512, context_length=20, width=16, depth=1, num_heads=2, mlp_ratio=2.0))
  return dict(embed_dim=64, vision=dict(image_size=64, patch_size=16, width=64, depth=1, num_heads=2, mlp_ratio=2.0,
                                        pool="cls"),
              text=dict(vocab_size=512, context_length=20, width=64, depth=1, num_heads=2, mlp_ratio=2.0))


def get_config(arg: str | None = None):
  method, rest = config_lib.split_method_arg(arg, METHODS, "distill")
  arg = config_lib.parse_arg(rest)
  c = config_lib.base_config()
  c.total_steps = 300
  c.batch_size = 128
  c.log_every = 25
  c.checkpoint_every = 300
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 30
  c.optim.weight_decay = 0.1
  c.data.image_size = 64
  c.data.context_length = 20
  if method == "distill":
    c.objective = "clip_feature_distill"
    c.objective_kwargs = {"towers": ("image", "text"), "kind": "contrastive", "temperature": 0.07,
                          "clip_weight": 0.1}
    c.model = dict(name="clip_distill_student", student=dict(name="clip", **student()), teacher_dim=128,
                   project=True, teacher_workdir="", teacher_open_clip="", random_teacher=False, teacher_model={})
  else:
    c.objective = "clip"
    c.model = dict(name="clip", **student())
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.image_size = 32
    if method == "distill":
      c.model.student = dict(name="clip", **student(tiny=True))
      c.model.teacher_dim = 32
      c.model.random_teacher = True
      c.model.teacher_model = dict(name="clip", **dict(student(tiny=True), embed_dim=32))
    else:
      c.model = dict(name="clip", **student(tiny=True))
  return c
