"""Cross-modal distillation on AV-MNIST (Gupta et al. 2016; Hinton et al. 2015): an image (MNIST) teacher supervises
a spoken-digit student through the paired train data; the student has only a few labels of its own.

  python -m mmjax.main --config experiments/avmnist_fusion.py:image --config.data.image_pca_energy=0 \
      --workdir runs/avmnist_image_teacher                                  (the teacher: clean images, all labels)
  python -m mmjax.main --config experiments/distill_avmnist.py:distill \
      --config.model.teacher_workdir=runs/avmnist_image_teacher --workdir runs/distill_audio
  python -m mmjax.main --config experiments/distill_avmnist.py:labels_only --workdir runs/audio_few_labels
  python -m mmjax.main --config experiments/distill_avmnist.py:distill,runlocal --workdir /tmp/x   (random teacher)

Methods (the argument; default distill), optionally followed by `runlocal` (tiny, fake data, a random frozen teacher):
  distill:      model "distill_student", objective "distill": an audio CNN (`student_config`) trained on all
                18000 train pairs with loss (1 - α) CE(its labelled examples) + α T² KL(teacher ‖ student) at
                T = 2, α = 0.9; the teacher (frozen, `model.teacher_workdir`) sees the paired image;
  labels_only:  the same audio CNN, objective "classify", trained on its labelled examples alone
                (data.labeled_only: the train split is just those), the baseline distillation must beat.
Labels: `data.label_fraction` (default 0.02: 360 of 18000, 36 per class, stratified, `data.label_seed`; data set
"avmnist_semi", mmjax/data/semi.py). Both use the same budget: 1124 steps of 64 (4 epochs of the full train
split), AdamW 3e-3, cosine, dropout 0.1; clean images (no PCA: the teacher must be good) and clean audio;
scored on the 10000 test pairs by the "classification" evaluator from the audio alone.
experiments/reports/colearning_transfer.py --part distillation trains the teacher and 3 seeds of each.
"""
from ml_collections import config_dict

from mmjax import config as config_lib

METHODS = ("distill", "labels_only")
TRAIN_SIZE, BATCH_SIZE, EPOCHS = 18000, 64, 4


def cnn(**kw) -> dict:
  return {"name": "cnn", "channels": (8, 16, 32), **kw}


def student_config(tiny: bool = False) -> dict:
  """The audio CNN of experiments/reports/avmnist.py: four 3x3 conv + GroupNorm + ReLU + 2x2 max-pool stages
  (8/16/32/64 channels), global average pooling, MLP head 64 (the 3-stage CNN without normalisation of
  avmnist_fusion.py:audio learns too slowly from spectrograms for this budget)."""
  enc = cnn(channels=(4,)) if tiny else cnn(channels=(8, 16, 32, 64), group_norm=True)
  return dict(name="fusion_classifier", modalities=("audio",), num_classes=10, fusion="early",
              encoders={"audio": enc}, head_hidden=(8,) if tiny else (64,), dropout=0.1)


def teacher_config(tiny: bool = False) -> dict:
  """The image-only classifier of experiments/avmnist_fusion.py:image (used only for a random smoke-test teacher)."""
  return dict(student_config(tiny), modalities=("image",), encoders={"image": cnn(channels=(4,)) if tiny else cnn()})


def get_config(arg: str | None = None):
  method, rest = config_lib.split_method_arg(arg, METHODS, "distill")
  arg = config_lib.parse_arg(rest)
  c = config_lib.base_config()
  c.batch_size = BATCH_SIZE
  c.total_steps = EPOCHS * (TRAIN_SIZE // BATCH_SIZE)       # 1124
  c.log_every = 50
  c.checkpoint_every = c.total_steps
  c.optim.update(dict(name="adamw", lr=3e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, warmup_steps=50,
                      schedule="cosine", end_lr_factor=0.0, clip_grad_norm=1.0,
                      no_decay_regex=r"(bias|scale)$"))
  c.data.name = "avmnist_semi"
  c.data.label_fraction = 0.02
  c.data.label_seed = 0
  c.data.labeled_only = method == "labels_only"
  c.data.image_pca_energy = 0.0
  c.data.image_noise_std = 0.0
  c.data.audio_snr_db = config_dict.placeholder(float)     # None: clean audio
  c.data.audio_num_samples = 8000
  c.data.audio_hop_length = 160
  c.data.audio_n_mels = 40
  c.data.audio_standardize = True
  c.data.noise_seed = 0
  if method == "distill":
    c.objective = "distill"
    c.objective_kwargs = {"temperature": 2.0, "alpha": 0.9}
    c.model = dict(name="distill_student", student=student_config(), teacher_workdir="", random_teacher=False,
                   teacher_model={})
  else:
    c.objective = "classify"
    c.model = student_config()
  c.evals.names = "classification"
  c.evals.num_examples = 0
  c.evals.batch_size = 500
  c.evals.classification.split = "test"
  c.evals.classification.robustness_modality = ""
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 40
    c.data.audio_num_samples = 2000
    c.data.label_fraction = 0.5
    if method == "distill":
      c.model.student = student_config(tiny=True)
      c.model.random_teacher = True
      c.model.teacher_model = teacher_config(tiny=True)
    else:
      c.model = student_config(tiny=True)
  return c
