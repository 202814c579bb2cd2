"""The standard evaluation suite (evals/zero_shot_suite.py, retrieval_suite.py, benchmark.py, data/karpathy.py):
metrics against NumPy references computed from the same images (read with PIL here) and a stand-in two-tower
model, prompt files against open_clip's lists, CLIP_benchmark's result files."""
from __future__ import annotations

import importlib.util
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax.evals import benchmark, retrieval_suite, zero_shot_suite
from mmjax.evals.base import EVAL_KEYS, EvalContext
from mmjax.errors import MmjaxError



def _open_clip_metadata_file() -> str | None:
  """open_clip's zero_shot_metadata.py in the installed open_clip_torch (make install adds it with --no-deps),
  located without importing open_clip (which needs torch)."""
  spec = importlib.util.find_spec("open_clip")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "zero_shot_metadata.py")
  return path if os.path.isfile(path) else None


SIZE, L, V, D = 6, 48, 97, 16


class CharTokenizer:
  """ids = ord(char) % V, zero padded to L (the suite only calls encode)."""

  def encode(self, texts, context_length):
    out = np.zeros((len(texts), context_length), np.int32)
    for i, t in enumerate(texts):
      ids = [ord(c) % V for c in t[:context_length]]
      out[i, :len(ids)] = ids
    return out


class TwoTower:
  """encode_image: tanh(flattened pixels @ wi); encode_text: sum of token embeddings wt[ids] (unnormalised)."""

  def apply(self, variables, x, method):
    p = variables["params"]
    if method == "encode_image":
      return jnp.tanh(x.reshape(x.shape[0], -1) @ p["wi"])
    return p["wt"][x].sum(axis=1)


PARAMS = {"wi": np.random.default_rng(1).normal(size=(SIZE * SIZE * 3, D)).astype(np.float32) * 0.1,
          "wt": np.random.default_rng(2).normal(size=(V, D)).astype(np.float32)}


def ref_crop(a: np.ndarray, size: int = SIZE) -> np.ndarray:
  """Reference: torchvision's Resize(size) + CenterCrop(size) (transforms.functional), written out with PIL."""
  im = Image.fromarray(a)
  w, h = im.size
  short = min(w, h)
  if (w, h) != (size * w // short, size * h // short):
    im = im.resize((size * w // short, size * h // short), Image.BICUBIC)
  w, h = im.size
  left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
  return np.asarray(im.crop((left, top, left + size, top + size)))


def ref_image_features(images: list[np.ndarray]) -> np.ndarray:
  """The stand-in image tower on ref_crop'ed images, unit norm."""
  xs = [ref_crop(a).astype(np.float64) / 127.5 - 1 for a in images]
  f = np.tanh(np.stack(xs).reshape(len(xs), -1) @ PARAMS["wi"].astype(np.float64))
  return f / np.linalg.norm(f, axis=1, keepdims=True)


def ref_text_features(texts: list[str]) -> np.ndarray:
  f = PARAMS["wt"].astype(np.float64)[CharTokenizer().encode(texts, L)].sum(axis=1)
  return f / np.linalg.norm(f, axis=1, keepdims=True)


def ctx_for(workdir, batch_size: int = 4, **settings):
  """An EvalContext whose config gives `settings` under the suite evaluator(s) that declare each one
  (evals.zero_shot_suite.<key> / evals.retrieval_suite.<key>; benchmark_* and suite_image_norm: both)."""
  suites = ("zero_shot_suite", "retrieval_suite")
  unknown = [k for k in settings if not any(k in EVAL_KEYS[s] for s in suites)]
  assert not unknown, f"not a suite setting: {unknown}"
  settings = dict(dict(benchmark_model="", benchmark_pretrained=""), **settings)
  cfg = ml_collections.ConfigDict(dict(
      data=dict(name="karpathy", image_size=SIZE, context_length=L, data_dir="", fake_raw=0, karpathy_json="",
                karpathy_images=""),
      model=dict(name="clip"),
      evals=dict(batch_size=batch_size, num_examples=16,
                 **{s: {k: v for k, v in settings.items() if k in EVAL_KEYS[s]} for s in suites})))
  return EvalContext(config=cfg, model=TwoTower(), tokenizer=CharTokenizer(), mesh=None, cache={},
                     workdir=str(workdir))


def write_image(path, seed: int, h: int, w: int) -> np.ndarray:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  a = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
  Image.fromarray(a).save(path)
  return a


# ----------------------------------------------------------------------------------------------- prompt files
def test_packaged_prompts_equal_open_clips_lists():
  imagenet, cifar = benchmark.templates("imagenet"), benchmark.templates("cifar")
  assert len(imagenet) == 80 and len(cifar) == 18 and len(benchmark.imagenet_classnames()) == 1000
  assert cifar[0] == "a photo of a {}." and cifar[-1] == "a photo of the big {}."
  meta_file = _open_clip_metadata_file()
  if meta_file is None:
    pytest.skip("open_clip_torch is not installed (make install adds it: pip install --no-deps open_clip_torch)")
  spec = importlib.util.spec_from_file_location("zero_shot_metadata", meta_file)
  meta = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(meta)
  assert [t.format("X") for t in imagenet] == [f("X") for f in meta.OPENAI_IMAGENET_TEMPLATES]
  assert benchmark.imagenet_classnames() == list(meta.IMAGENET_CLASSNAMES)


def test_template_file_errors(tmp_path):
  (tmp_path / "t.txt").write_text("a photo of a {}.\nno placeholder\n")
  with pytest.raises(MmjaxError, match="no placeholder.*exactly once"):
    benchmark.templates(str(tmp_path / "t.txt"))
  with pytest.raises(MmjaxError, match="does not exist"):
    benchmark.templates(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("h,w,size", [(9, 14, 6), (14, 9, 6), (7, 7, 6), (6, 6, 6), (33, 20, 8), (5, 11, 8)])
def test_center_crop_resize_is_torchvisions_eval_transform(h, w, size):
  a = np.random.default_rng(h * w).integers(0, 255, (h, w, 3), dtype=np.uint8)
  got = benchmark.center_crop_resize(a, size)
  assert got.shape == (size, size, 3)
  np.testing.assert_array_equal(got, ref_crop(a, size))
  if h != w:
    assert not np.array_equal(got, np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)))


# ----------------------------------------------------------------------------------------------- metrics
def test_classification_metrics_match_a_numpy_reference():
  rng = np.random.default_rng(0)
  logits, labels = rng.normal(size=(200, 9)), rng.integers(0, 8, 200)      # class 8 never occurs
  got = benchmark.classification_metrics(logits, labels)
  order = np.argsort(-logits, axis=1)
  want1 = np.mean(order[:, 0] == labels)
  want5 = np.mean([labels[i] in order[i, :5] for i in range(200)])
  confusion = np.zeros((9, 9))
  np.add.at(confusion, (labels, order[:, 0]), 1)
  present = confusion.sum(1) > 0
  recall = np.diag(confusion)[present] / confusion.sum(1)[present]
  assert got == pytest.approx({"acc1": want1, "acc5": want5, "mean_per_class_recall": recall.mean()}, abs=1e-12)
  assert 0.05 < got["acc1"] < 0.3                                          # chance level, not 0 or 1
  tied = benchmark.classification_metrics(np.zeros((3, 4)), np.array([0, 1, 2]))
  assert tied["acc1"] == 0.0                                                # ties count against the true class


# ----------------------------------------------------------------------------------------------- zero-shot
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """root/test/<class>/*.png: 3 classes x 5 non-square images, names in classnames.txt."""
  root = tmp_path_factory.mktemp("folder")
  images, labels = [], []
  for c, cls in enumerate(["c_a", "c_b", "c_c"]):
    for i in range(5):
      images.append(write_image(str(root / "test" / cls / f"{i}.png"), 10 * c + i, 9 + i, 7 + 2 * i))
      labels.append(c)
  (root / "classnames.txt").write_text("red apple\ngreen pear\nblue berry\n")
  return root, images, np.asarray(labels)


def test_zero_shot_suite_on_an_image_folder_matches_the_reference(folder, tmp_path):
  root, images, labels = folder
  (tmp_path / "t.txt").write_text("a photo of a {}.\nart of the {}.\n")
  ctx = ctx_for(tmp_path, zs_datasets=f"fruit=image_folder:{root}", zs_templates=str(tmp_path / "t.txt"),
                zs_classnames="", zs_limit=0, benchmark_model="tiny", benchmark_pretrained="run0")
  got = zero_shot_suite.zero_shot_suite(PARAMS, ctx)
  names = ["red apple", "green pear", "blue berry"]
  emb = ref_text_features([t.format(c) for c in names for t in ("a photo of a {}.", "art of the {}.")])
  cls = emb.reshape(3, 2, D).mean(1)
  cls /= np.linalg.norm(cls, axis=1, keepdims=True)
  pred = np.argmax(ref_image_features(images) @ cls.T, axis=1)
  want = {"acc1": np.mean(pred == labels),
          "mean_per_class_recall": np.mean([np.mean(pred[labels == c] == c) for c in range(3)])}
  assert {k: got[f"zero_shot_suite/fruit/{k}"] for k in want} == pytest.approx(want, abs=1e-6)
  assert "zero_shot_suite/fruit/acc5" not in got                           # 3 classes: no top-5
  with open(tmp_path / "clip_benchmark" / "fruit_zeroshot_classification.json") as f:
    doc = json.load(f)
  assert doc == {"dataset": "fruit", "model": "tiny", "pretrained": "run0", "task": "zeroshot_classification",
                 "metrics": {k: got[f"zero_shot_suite/fruit/{k}"] for k in ("acc1", "mean_per_class_recall")},
                 "language": "en"}


def test_zero_shot_suite_limit_keeps_every_class_and_unknown_data_set_is_named(folder, tmp_path):
  root, _, _ = folder
  ctx = ctx_for(tmp_path, zs_datasets=f"image_folder:{root}", zs_templates="cifar", zs_classnames="", zs_limit=6)
  data = zero_shot_suite._Classification(ctx, f"image_folder:{root}")
  assert data.default_templates == "imagenet"
  index = np.unique(np.linspace(0, 14, 6).astype(int))
  assert set(data.labels[index]) == {0, 1, 2}
  assert set(zero_shot_suite.zero_shot_suite(PARAMS, ctx)) == {
      f"zero_shot_suite/{os.path.basename(str(root))}/{k}" for k in ("acc1", "mean_per_class_recall")}
  with pytest.raises(MmjaxError, match="imagenet_sketch.*not a zero-shot data set"):
    zero_shot_suite.zero_shot_suite(PARAMS, ctx_for(tmp_path, zs_datasets="imagenet_sketch", zs_templates="",
                                                    zs_classnames="", zs_limit=0))


# ----------------------------------------------------------------------------------------------- retrieval
@pytest.fixture(scope="module")
def karpathy_files(tmp_path_factory):
  """A COCO-style Karpathy JSON (filepath + filename) over images elsewhere: 4 test images with 1-3 captions,
  1 train and 1 restval image."""
  d = tmp_path_factory.mktemp("karpathy")
  captions = [["a dog runs", "the dog is running", "brown dog"], ["a cat sleeps"], ["two birds", "birds on a wire"],
              ["a red car", "car parked", "vehicle on a street"], ["train caption"], ["restval caption"]]
  split = ["test"] * 4 + ["train", "restval"]
  images, entries = [], []
  for i, (caps, s) in enumerate(zip(captions, split)):
    images.append(write_image(str(d / "images" / "val2014" / f"im{i}.jpg"), 100 + i, 8 + i, 12 - i))
    entries.append({"filepath": "val2014", "filename": f"im{i}.jpg", "split": s, "imgid": i,
                    "sentences": [{"raw": c + " ", "tokens": c.split()} for c in caps]})
  (d / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": entries}))
  # the reference reads the JPEGs back (lossy) as the suite does
  images = [np.asarray(Image.open(d / "images" / "val2014" / f"im{i}.jpg").convert("RGB")) for i in range(6)]
  return d, images, captions


def test_retrieval_suite_on_karpathy_json_matches_the_reference(karpathy_files, tmp_path):
  d, images, captions = karpathy_files
  ctx = ctx_for(tmp_path, retrieval_json=str(d / "dataset_coco.json"), retrieval_images=str(d / "images"),
                retrieval_split="test", retrieval_limit=0)
  got = retrieval_suite.retrieval_suite(PARAMS, ctx)
  img = ref_image_features(images[:4])
  texts = [c for caps in captions[:4] for c in caps]
  owner = np.repeat(np.arange(4), [len(c) for c in captions[:4]])
  sim = img @ ref_text_features(texts).T                                    # [4 images, 9 captions]
  want = {}
  for k in (1, 5, 10):
    want[f"text_retrieval_recall@{k}"] = np.mean([np.any(owner[np.argsort(-sim[i])[:k]] == i) for i in range(4)])
    want[f"image_retrieval_recall@{k}"] = np.mean([owner[j] in np.argsort(-sim[:, j])[:k] for j in range(9)])
  assert {k: got[f"retrieval_suite/coco/{k}"] for k in want} == pytest.approx(want, abs=1e-6)
  assert 0 < want["text_retrieval_recall@1"] < 1 or 0 < want["image_retrieval_recall@1"] < 1
  with open(tmp_path / "clip_benchmark" / "coco_zeroshot_retrieval.json") as f:
    doc = json.load(f)
  assert (doc["dataset"], doc["task"], doc["model"], doc["language"]) == ("coco", "zeroshot_retrieval", "clip", "en")
  assert doc["metrics"] == {k: got[f"retrieval_suite/coco/{k}"] for k in want}


def test_karpathy_source_splits_and_the_run_data_fallback(karpathy_files, tmp_path):
  d, images, captions = karpathy_files
  from mmjax.data import karpathy
  train = karpathy.KarpathySource(str(d / "dataset_coco.json"), "train", str(d / "images"))
  assert [e[1] for e in train.items] == [captions[4], captions[5]]                   # train + restval
  ex = train[1]
  np.testing.assert_array_equal(ex["image"], images[5])
  assert ex["image_id"] == os.path.join("val2014", "im5.jpg")
  ctx = ctx_for(tmp_path, retrieval_json="", retrieval_images="", retrieval_split="test", retrieval_limit=2)
  ctx.config.data.karpathy_json, ctx.config.data.karpathy_images = str(d / "dataset_coco.json"), str(d / "images")
  got = retrieval_suite.retrieval_suite(PARAMS, ctx)                        # the run's data set: data.name=karpathy
  assert set(got) == {f"retrieval_suite/karpathy/{w}_retrieval_recall@{k}" for w in ("image", "text")
                      for k in (1, 5, 10)}
  assert got["retrieval_suite/karpathy/text_retrieval_recall@5"] == 1.0     # 2 images: any rank < 5
  with pytest.raises(MmjaxError, match="image root"):
    karpathy.KarpathySource(str(d / "dataset_coco.json"), "test")[0]       # images are not beside the JSON


def test_center_crop_resize_equals_torchvision_when_installed():
  T = pytest.importorskip("torchvision.transforms", reason="torchvision is not installed (it comes with pip install 'mmjax[torch]')")
  for h, w, size in [(9, 14, 6), (14, 9, 6), (33, 20, 8), (5, 11, 8), (224, 300, 32)]:
    a = np.random.default_rng(h + w).integers(0, 255, (h, w, 3), dtype=np.uint8)
    tv = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])
    np.testing.assert_array_equal(benchmark.center_crop_resize(a, size), np.asarray(tv(Image.fromarray(a))))


def test_zero_shot_suite_on_cifar10_test_matches_a_reference_from_the_raw_zip(tmp_path):
  """The prepared CIFAR-10 test builder from a fake raw zip (data.fake_raw); the reference reads the zip itself.
  Metrics are order-free, so the builder's example order does not matter."""
  import io
  import zipfile
  from mmjax.data import image_text
  from mmjax.data.builders import cifar10_test
  ctx = ctx_for(tmp_path, zs_datasets="cifar10_test", zs_templates="", zs_classnames="", zs_limit=0)
  ctx.config.data.fake_raw = 30
  got = zero_shot_suite.zero_shot_suite(PARAMS, ctx)
  raw = image_text.prepared(ml_collections.ConfigDict(dict(name="cifar10_test", fake_raw=30))).raw_dir
  images, labels = [], []
  with zipfile.ZipFile(os.path.join(raw, cifar10_test.ZIP)) as zf:
    for name in zf.namelist():
      if name.endswith(".jpg"):
        images.append(np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB")))
        labels.append(cifar10_test.CLASSES.index(name.split("/")[1]))
  labels = np.asarray(labels)
  tmpl = benchmark.templates("cifar")
  emb = ref_text_features([t.format(c) for c in cifar10_test.CLASSES for t in tmpl]).reshape(10, len(tmpl), D)
  cls = emb.mean(1) / np.linalg.norm(emb.mean(1), axis=1, keepdims=True)
  logits = ref_image_features(images) @ cls.T
  order = np.argsort(-logits, axis=1)
  want = {"acc1": np.mean(order[:, 0] == labels), "acc5": np.mean([labels[i] in order[i, :5] for i in range(30)]),
          "mean_per_class_recall": np.mean([np.mean(order[labels == c, 0] == c) for c in range(10)])}
  assert len(images) == 30 and len(np.unique(cls.round(6), axis=0)) == 10          # prompts tell classes apart
  assert {k: got[f"zero_shot_suite/cifar10_test/{k}"] for k in want} == pytest.approx(want, abs=1e-6)


def test_zero_shot_suite_on_cifar100_matches_a_reference_from_the_raw_tar(tmp_path):
  """The prepared CIFAR-100 (test split) from a fake cifar-100-python.tar.gz in the release's format; the reference
  unpickles the tar itself, names the classes with CLIP's CIFAR-100 names and prompts with the 18 CIFAR templates."""
  import pickle
  import tarfile
  from mmjax.data import image_text
  from mmjax.data.builders import cifar100
  ctx = ctx_for(tmp_path, zs_datasets="cifar100", zs_templates="", zs_classnames="", zs_limit=0)
  ctx.config.data.fake_raw = 40
  got = zero_shot_suite.zero_shot_suite(PARAMS, ctx)
  raw = image_text.prepared(ml_collections.ConfigDict(dict(name="cifar100", fake_raw=40))).raw_dir
  with tarfile.open(os.path.join(raw, cifar100.TAR), "r:gz") as tf:
    test = pickle.load(tf.extractfile("cifar-100-python/test"), encoding="bytes")
  images = [row.reshape(3, 32, 32).transpose(1, 2, 0) for row in test[b"data"]]
  labels = np.asarray(test[b"fine_labels"])
  names = [c.replace("_", " ") for c in cifar100.FINE_CLASSES]
  tmpl = benchmark.templates("cifar")
  emb = ref_text_features([t.format(c) for c in names for t in tmpl]).reshape(100, len(tmpl), D)
  cls = emb.mean(1) / np.linalg.norm(emb.mean(1), axis=1, keepdims=True)
  order = np.argsort(-(ref_image_features(images) @ cls.T), axis=1)
  want = {"acc1": np.mean(order[:, 0] == labels), "acc5": np.mean([labels[i] in order[i, :5] for i in range(40)]),
          "mean_per_class_recall": np.mean([np.mean(order[labels == c, 0] == c) for c in np.unique(labels)])}
  assert len(images) == 40 and len(np.unique(labels)) == 40
  assert {k: got[f"zero_shot_suite/cifar100/{k}"] for k in want} == pytest.approx(want, abs=1e-6)
  assert benchmark.cifar100_classnames() == names


def test_an_imagenet_val_folder_gets_clips_class_names(tmp_path):
  names = benchmark.imagenet_classnames()
  wnids = sorted(f"n{1440764 + 7 * i:08d}" for i in range(1000))
  for w in wnids:
    os.makedirs(tmp_path / "val" / w)
    (tmp_path / "val" / w / "a.png").write_bytes(b"")       # listed, never decoded here
  ctx = ctx_for(tmp_path, zs_datasets="", zs_templates="", zs_classnames="", zs_limit=0)
  data = zero_shot_suite._Classification(ctx, f"image_folder:{tmp_path}")
  assert data.classnames == names and data.default_templates == "imagenet"
  assert zero_shot_suite.parse_datasets(f"imagenet1k=image_folder:{tmp_path}, cifar10_test") == [
      ("imagenet1k", f"image_folder:{tmp_path}"), ("cifar10_test", "cifar10_test")]


@pytest.mark.parametrize("norm", ["minus_one_one", "openai"])
def test_encode_images_scales_as_training_or_as_open_clip(norm):
  images = np.random.default_rng(5).integers(0, 255, (5, 3, 3, 3), dtype=np.uint8)
  flat = lambda p, x: jnp.asarray(x).reshape(x.shape[0], -1)
  got = benchmark.encode_images(flat, None, lambda i: images[i], 5, 2, norm)
  if norm == "openai":      # CLIP's preprocessing constants (openai/CLIP clip.py _transform)
    x = (images / 255.0 - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array([0.26862954, 0.26130258,
                                                                                     0.27577711])
  else:
    x = images / 127.5 - 1
  x = x.reshape(5, -1)
  np.testing.assert_allclose(got, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)
  with pytest.raises(MmjaxError, match="suite_image_norm"):
    benchmark.encode_images(flat, None, lambda i: images[i], 5, 2, "imagenet")


@pytest.mark.slow
def test_live_zero_shot_suite_equals_open_clips_zero_shot_on_imported_weights(folder, tmp_path):
  """A small random OpenCLIP model imported into mmjax (interop/open_clip.py): zero_shot_suite with
  suite_image_norm='openai' and CLIP's BPE gives open_clip's own zero-shot (image_transform(is_train=False),
  build_zero_shot_classifier) predictions, hence metrics."""
  torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'mmjax[torch]')")
  open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
  from open_clip.zero_shot_classifier import build_zero_shot_classifier
  from mmjax.data.clip_bpe import ClipBpeTokenizer
  from mmjax.interop import open_clip as oc
  from mmjax.models import build_model
  root, images, labels = folder
  torch.manual_seed(0)
  # head_width 64: a state dict does not store the head count; interop.open_clip infers width // 64
  model = open_clip.model.CLIP(32, dict(image_size=24, patch_size=6, width=64, layers=1, head_width=64),
                               dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)).eval()
  torch.save(model.state_dict(), tmp_path / "m.pt")
  sd = oc.load_state_dict(str(tmp_path / "m.pt"))
  ctx = ctx_for(tmp_path, zs_datasets=f"fruit=image_folder:{root}", zs_templates="imagenet", zs_classnames="",
                zs_limit=0, suite_image_norm="openai")
  ctx.config.data.image_size, ctx.config.data.context_length = 24, 77
  ctx.model, ctx.tokenizer = build_model(oc.config_from_state_dict(sd)), ClipBpeTokenizer()
  got = zero_shot_suite.zero_shot_suite(jax_tree(oc.import_params(sd)), ctx)
  preprocess = open_clip.image_transform(24, is_train=False)
  with torch.no_grad():
    x = torch.stack([preprocess(Image.fromarray(a)) for a in images])
    feats = model.encode_image(x, normalize=True)
    classifier = build_zero_shot_classifier(model, open_clip.get_tokenizer("ViT-B-32"),
                                            ["red apple", "green pear", "blue berry"],
                                            [t.format for t in benchmark.templates("imagenet")])
    pred = (feats @ classifier).argmax(dim=1).numpy()
  want = {"acc1": np.mean(pred == labels),
          "mean_per_class_recall": np.mean([np.mean(pred[labels == c] == c) for c in range(3)])}
  assert {k: got[f"zero_shot_suite/fruit/{k}"] for k in want} == pytest.approx(want, abs=1e-9)
  import jax
  enc = jax.jit(lambda p, x: ctx.model.apply({"params": p}, x, method="encode_image"))
  mine = benchmark.encode_images(enc, jax_tree(oc.import_params(sd)),
                                 lambda i: benchmark.center_crop_resize(images[i], 24), len(images), 4, "openai")
  np.testing.assert_allclose(mine, feats.numpy(), atol=1e-4)              # same crop, scaling and embeddings


def jax_tree(params):
  import jax
  return jax.tree.map(np.asarray, params)


def test_cifar100_is_a_zero_shot_and_probe_data_set_of_the_clip_and_probe_evals(tmp_path):
  from mmjax.evals import clip_evals, linear_probe
  from mmjax.data.builders import cifar100
  ctx = ctx_for(tmp_path)
  ctx.config.data.fake_raw = 40
  ctx.config.evals.num_examples = 40
  images, labels, names = clip_evals._zero_shot_data_arrays(ctx, "cifar100")
  assert images.shape == (40, SIZE, SIZE, 3) and len(np.unique(labels)) == 40
  assert [n.replace("_", " ") for n in names] == benchmark.cifar100_classnames()
  assert list(names) == list(cifar100.FINE_CLASSES)
  ctx.config.model.vision = dict(image_size=SIZE)
  train, test = linear_probe.probe_data_arrays(ctx, "cifar100")
  assert len(train["label"]) + len(test["label"]) == 40 and not set(train["image_id"]) & set(test["image_id"])
