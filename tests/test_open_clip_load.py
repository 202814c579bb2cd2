"""mmjax.interop.open_clip.load and the OpenCLIP evaluation config (issue 22 items 4 and 6) against open_clip:
embeddings (normalised or not), the eval preprocessing, and zero-shot logits equal to open_clip's
`build_zero_shot_classifier` on the same images. The torch-free tests compare with outputs open_clip computed and
tests/fixtures/make_open_clip_eval_fixture.py stored; the live ones (torch + open_clip installed) with open_clip
itself, on perturbed random weights the test writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import ROOT, read_jsonl
from mmjax import config as config_lib
from mmjax.data import image_text
from mmjax.data.builders.cifar10_test import CLASSES
from mmjax.errors import MmjaxError
from mmjax.evals.zero_shot import CIFAR_TEMPLATES, build_classifier
from mmjax.interop import open_clip as oc

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, FIXTURES)
from open_clip_weights import bang_tokens, cifar_like_images, inputs, preprocess_images, weights  # noqa: E402

EVAL_CONFIG = os.path.join(ROOT, "experiments", "openclip_eval.py")
NO_TORCH = ("torch / open_clip_torch are not installed (pip install 'mmjax[torch]'); the fixture tests of this file "
            "cover the same property against stored open_clip outputs")


def _clip_bpe_or_skip():
  from mmjax.data.clip_bpe import ClipBpeTokenizer
  try:
    ClipBpeTokenizer()
  except MmjaxError:
    pytest.skip("the CLIP BPE vocabulary is not installed (pip install --no-deps open_clip_torch==3.3.0)")


def _write(sd, path) -> str:
  save_file({k: np.array(v, np.float32, order="C") for k, v in sd.items()}, str(path))
  return str(path)


def test_load_safetensors_gives_open_clip_embeddings(tmp_path):
  meta = json.load(open(os.path.join(FIXTURES, "open_clip_tiny.json")))
  ref = np.load(os.path.join(FIXTURES, "open_clip_tiny.npz"))
  model, params, tokenizer, preprocess = oc.load(_write(weights(meta["shapes"]), tmp_path / "tiny.safetensors"))
  images, tokens = inputs()
  np.testing.assert_allclose(oc.encode_image(model, params, images, normalize=True), ref["image_embeddings"],
                             atol=1e-4)
  np.testing.assert_allclose(oc.encode_text(model, params, bang_tokens(), normalize=True),
                             ref["bang_text_embeddings"], atol=1e-4)
  raw = np.asarray(oc.encode_text(model, params, tokens))           # open_clip's default: normalize=False
  assert np.abs(np.linalg.norm(raw, axis=-1) - 1).min() > 1e-2
  np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=-1, keepdims=True), ref["text_embeddings"], atol=1e-4)
  assert tokenizer is None                  # a 96-token vocabulary is not CLIP's: no CLIP tokenizer for it
  assert preprocess(images[0].astype(np.uint8)).shape == (1, 32, 32, 3)


def test_preprocess_is_open_clips_eval_transform():
  ref = np.load(os.path.join(FIXTURES, "open_clip_eval.npz"))["preprocess"]
  got = oc.make_preprocess(48)(preprocess_images())
  assert got.shape == ref.shape == (5, 48, 48, 3)
  np.testing.assert_allclose(got, ref, atol=1e-5)


def test_load_errors_are_one_line(tmp_path):
  for spec, match in ((str(tmp_path / "nope.safetensors"), "does not exist"),
                      ("ViT-B-99:" + str(tmp_path / "x.safetensors"), "does not exist")):
    with pytest.raises(MmjaxError, match=match) as e:
      oc.load(spec)
    assert "\n" not in str(e.value)
  meta = json.load(open(os.path.join(FIXTURES, "open_clip_tiny.json")))
  path = _write(weights(meta["shapes"]), tmp_path / "tiny.safetensors")
  with pytest.raises(MmjaxError, match="is not a ViT-B-32 checkpoint"):
    oc.load(f"ViT-B-32:{path}")


def _eval_config(init_from: str):
  c = config_lib.load_experiment(EVAL_CONFIG, "runlocal")
  c.model.init_from = init_from
  c.print_sharding = False
  return c


@pytest.mark.slow
def test_eval_config_zero_shot_logits_equal_stored_open_clip(tmp_path):
  """The openclip_eval config's model, weights (model.init_from), tokenizer and input normalisation, on 32x32 images
  resized as its zero-shot data is, give the logits open_clip's zero-shot classifier gave (1e-4)."""
  _clip_bpe_or_skip()
  from mmjax.train.loop import Trainer
  meta = json.load(open(os.path.join(FIXTURES, "open_clip_eval.json")))
  ref = np.load(os.path.join(FIXTURES, "open_clip_eval.npz"))
  path = _write(weights(meta["shapes"], seed=meta["weights_seed"]), tmp_path / "zs.safetensors")
  trainer = Trainer(_eval_config(path), str(tmp_path / "w"))
  model, params, tok = trainer.model, trainer.state.params, trainer.tokenizer
  size = trainer.config.data.image_size
  images = np.stack([image_text.resize(im, size) for im in cifar_like_images()]).astype(np.float32) / 127.5 - 1
  enc_txt = jax.jit(lambda t: model.apply({"params": params}, t, method="encode_text"))
  classifier = build_classifier(enc_txt, lambda t: tok.encode(t, trainer.config.data.context_length),
                                list(CLASSES), CIFAR_TEMPLATES)
  np.testing.assert_allclose(np.asarray(classifier).T, ref["classifier"], atol=1e-4)
  logits = np.asarray(model.apply({"params": params}, images, method="encode_image")) @ np.asarray(classifier).T
  np.testing.assert_allclose(logits, ref["zero_shot_logits"], atol=1e-4)


# ------------------------------------------------------------------------------------------------- live open_clip
def _live():
  torch = pytest.importorskip("torch", reason=NO_TORCH)
  open_clip = pytest.importorskip("open_clip", reason=NO_TORCH)
  return torch, open_clip


def _perturbed(open_clip, torch, embed_dim, vision_cfg, text_cfg, seed=0):
  torch.manual_seed(seed)
  model = open_clip.model.CLIP(embed_dim, vision_cfg, text_cfg).eval()
  with torch.no_grad():
    for p in model.parameters():          # every parameter moves off its init (zero biases, unit norms included)
      p.add_(0.05 * torch.randn_like(p))
  return model


@pytest.mark.slow
def test_live_load_pt_tokenizer_preprocess_and_embeddings(tmp_path):
  torch, open_clip = _live()
  from PIL import Image
  # heads = width / 64 in both towers (open_clip's head_width default; the state dict does not store it)
  model = _perturbed(open_clip, torch, 32, dict(image_size=40, patch_size=8, width=128, layers=2, head_width=64),
                     dict(context_length=24, vocab_size=49408, width=128, heads=2, layers=2))
  torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "m.pt")
  mm, params, tok, preprocess = oc.load(str(tmp_path / "m.pt"))
  texts = ['a sign that says "open!".', "a photo of a cat", "émoji 🐱 &amp; more", ""]
  ref_tokens = open_clip.tokenize(texts, context_length=24)
  np.testing.assert_array_equal(tok.encode(texts), ref_tokens.numpy())
  pil = [Image.fromarray(im) for im in preprocess_images()]
  transform = open_clip.image_transform(40, is_train=False)
  ref_images = torch.stack([transform(im) for im in pil])
  np.testing.assert_allclose(preprocess(pil), ref_images.permute(0, 2, 3, 1).numpy(), atol=1e-5)
  with torch.no_grad():
    for normalize in (False, True):
      np.testing.assert_allclose(oc.encode_image(mm, params, preprocess(pil), normalize=normalize),
                                 model.encode_image(ref_images, normalize=normalize).numpy(), atol=1e-4, rtol=1e-4)
      np.testing.assert_allclose(oc.encode_text(mm, params, tok.encode(texts), normalize=normalize),
                                 model.encode_text(ref_tokens, normalize=normalize).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_live_cli_eval_equals_open_clip_zero_shot(tmp_path):
  """`python -m mmjax.main --config experiments/openclip_eval.py --mode eval` on (generated) CIFAR-10 test images:
  its logits equal open_clip.build_zero_shot_classifier's on the same images (1e-4), and so does its accuracy."""
  torch, open_clip = _live()
  _clip_bpe_or_skip()
  import functools
  from PIL import Image
  from mmjax.evals.clip_evals import _zero_shot_data_arrays
  from mmjax.evals.base import EvalContext
  from mmjax.train.loop import Trainer
  tiny = config_lib.load_experiment_module(EVAL_CONFIG).TINY
  v, t = tiny["vision"], tiny["text"]
  model = _perturbed(open_clip, torch, tiny["embed_dim"],
                     dict(image_size=v["image_size"], patch_size=v["patch_size"], width=v["width"],
                          layers=v["depth"], head_width=v["width"] // v["num_heads"]),
                     dict(context_length=t["context_length"], vocab_size=49408, width=t["width"],
                          heads=t["num_heads"], layers=t["depth"]), seed=1)
  path = _write({k: v.numpy() for k, v in model.state_dict().items() if k != "attn_mask"},
                tmp_path / "oc.safetensors")
  work = tmp_path / "w"
  proc = subprocess.run([sys.executable, "-m", "mmjax.main", "--config", f"{EVAL_CONFIG}:runlocal", "--workdir",
                         str(work), f"--config.model.init_from={path}", "--mode", "eval"],
                        env=dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + sys.path[1:]), JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  reported = [r for r in read_jsonl(work / "metrics.jsonl") if "eval/zero_shot/cifar10_test" in r][-1]
  # open_clip on the same images: the prepared (generated) CIFAR-10 test split, through open_clip's own transform.
  config = _eval_config(path)
  src = image_text.prepared(config_lib.ml_collections.ConfigDict(dict(name="cifar10_test", data_dir="",
                            fake_raw=config.data.fake_raw))).as_data_source("test")
  n = min(len(src), config.evals.num_examples)
  transform = open_clip.image_transform(v["image_size"], is_train=False)
  images = torch.stack([transform(Image.fromarray(src[i]["image"])) for i in range(n)])
  labels = np.asarray([int(src[i]["label"]) for i in range(n)])
  tokenizer = functools.partial(open_clip.tokenize, context_length=t["context_length"])
  with torch.no_grad():
    classifier = open_clip.build_zero_shot_classifier(model, tokenizer, list(CLASSES), list(CIFAR_TEMPLATES))
    ref = (model.encode_image(images, normalize=True) @ classifier).numpy()
  # mmjax's logits, from the config's own zero-shot data path and the Trainer that eval mode builds.
  trainer = Trainer(config, str(tmp_path / "w2"))
  ctx = EvalContext(config=config, model=trainer.model, tokenizer=trainer.tokenizer, mesh=trainer.mesh, cache={},
                    workdir=None)
  mm_images, mm_labels, names = _zero_shot_data_arrays(ctx, "cifar10_test")
  np.testing.assert_array_equal(mm_labels, labels)
  assert names == list(CLASSES)
  p = trainer.state.params
  cls = build_classifier(jax.jit(lambda x: trainer.model.apply({"params": p}, x, method="encode_text")),
                         lambda x: trainer.tokenizer.encode(x, t["context_length"]), list(CLASSES), CIFAR_TEMPLATES)
  logits = np.asarray(trainer.model.apply({"params": p}, mm_images, method="encode_image")) @ np.asarray(cls).T
  np.testing.assert_allclose(logits, ref, atol=1e-4)
  ref_top1 = 100.0 * np.mean(ref.argmax(1) == labels)
  assert reported["eval/zero_shot/cifar10_test"] == pytest.approx(ref_top1)
  assert "eval/retrieval/i2t_R@1" in reported
