"""OpenCLIP weight import/export: mmjax's CLIP with imported weights gives open_clip's embeddings (1e-4, float32).

The reference embeddings in tests/fixtures/open_clip_tiny.npz were computed by open_clip itself
(tests/fixtures/make_open_clip_fixture.py) for deterministic weights that both sides rebuild from names and
shapes; a second test builds a live OpenCLIP model when torch is installed (pip install 'mmjax[torch]').
"""
from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from mmjax.errors import MmjaxError
from mmjax.interop import open_clip as oc
from mmjax.models import build_model

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, FIXTURES)
from open_clip_weights import bang_tokens, inputs, weights  # noqa: E402


def _fixture_state_dict():
  meta = json.load(open(os.path.join(FIXTURES, "open_clip_tiny.json")))
  return weights(meta["shapes"]), meta


def _mmjax_embeddings(sd, images, tokens):
  cfg = oc.config_from_state_dict(sd)
  model = build_model(cfg)
  params = jax.tree.map(np.asarray, oc.import_params(sd))
  img = model.apply({"params": params}, images, method="encode_image")
  txt = model.apply({"params": params}, tokens.astype(np.int32), method="encode_text")
  return np.asarray(img), np.asarray(txt), cfg, params


def test_imported_weights_reproduce_open_clip_embeddings():
  sd, meta = _fixture_state_dict()
  ref = np.load(os.path.join(FIXTURES, "open_clip_tiny.npz"))
  images, tokens = inputs()
  img, txt, cfg, _ = _mmjax_embeddings(sd, images, tokens)
  assert cfg["vision"] == dict(image_size=32, patch_size=8, width=128, depth=2, num_heads=2, mlp_ratio=4.0,
                               pool="cls")
  assert cfg["text"] == dict(vocab_size=96, context_length=16, width=128, depth=2, num_heads=2, mlp_ratio=4.0,
                             eot_id=None)
  assert cfg["embed_dim"] == 64
  assert np.abs(img - ref["image_embeddings"]).max() <= 1e-4
  assert np.abs(txt - ref["text_embeddings"]).max() <= 1e-4


def test_texts_with_id_zero_pool_at_the_eot_as_open_clip():
  """CLIP's BPE id 0 is "!": a text with "!" inside must pool at its EOT (issue 22, defect 2), not at the last
  non-zero id; the reference embeddings were computed by open_clip's encode_text."""
  sd, _ = _fixture_state_dict()
  ref = np.load(os.path.join(FIXTURES, "open_clip_tiny.npz"))
  images, _ = inputs()
  tokens = bang_tokens()
  assert (tokens[:, :3] == 0).any()
  _, txt, _, _ = _mmjax_embeddings(sd, images, tokens)
  assert np.abs(txt - ref["bang_text_embeddings"]).max() <= 1e-4


@pytest.mark.slow
def test_live_open_clip_tokenized_captions_with_bangs(tmp_path):
  torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'mmjax[torch]'); the fixture "
                              "test above covers texts with id 0 against stored open_clip outputs")
  open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
  torch.manual_seed(0)
  model = open_clip.model.CLIP(32, dict(image_size=16, patch_size=8, width=64, layers=1, head_width=64),
                               dict(context_length=20, vocab_size=49408, width=64, heads=1, layers=2)).eval()
  captions = ['a sign that says "open!".', "wow!!! a dog!", "!", "no bang here", "stop! look! listen!"]
  tokens = open_clip.tokenize(captions, context_length=20).numpy()
  assert (tokens == 0).sum() > (tokens[:, -1] == 0).sum()        # "!" (id 0) occurs inside the texts
  with torch.no_grad():
    ref = model.encode_text(torch.from_numpy(tokens), normalize=True).numpy()
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  cfg = oc.config_from_state_dict(sd)
  mm = build_model(cfg)
  params = jax.tree.map(np.asarray, oc.import_params(sd))
  txt = np.asarray(mm.apply({"params": params}, tokens.astype(np.int32), method="encode_text"))
  assert np.abs(txt - ref).max() <= 1e-4


def test_export_is_the_exact_inverse_and_safetensors_round_trip(tmp_path):
  from safetensors.numpy import save_file
  sd, _ = _fixture_state_dict()
  back = oc.export_state_dict(oc.import_params(sd))
  assert sorted(back) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
  save_file(back, str(tmp_path / "w.safetensors"))
  loaded = oc.load_state_dict(str(tmp_path / "w.safetensors"))
  assert all(np.array_equal(loaded[k], sd[k]) for k in sd)


def test_bad_state_dicts_are_named():
  sd, _ = _fixture_state_dict()
  with pytest.raises(MmjaxError, match=r"missing \['visual.conv1.weight'\]"):
    oc.config_from_state_dict({k: v for k, v in sd.items() if k != "visual.conv1.weight"})
  with pytest.raises(MmjaxError, match=r"no mmjax counterpart: \['visual.attnpool.q_proj.weight'\]"):
    oc.import_params(dict(sd, **{"visual.attnpool.q_proj.weight": np.zeros((2, 2), np.float32)}))
  with pytest.raises(MmjaxError, match="does not exist"):
    oc.load_state_dict("/nonexistent/model.safetensors")


def test_presets_build_the_standard_architectures():
  for name, preset in oc.PRESETS.items():
    model = build_model(dict(name="clip", **preset))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32),
                            jax.ShapeDtypeStruct((1, 77), np.int32))["params"]
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    # Parameter counts of open_clip's models (open_clip.create_model(name) on 2026-11-23): B/32 151,277,313,
    # B/16 149,620,737, L/14 427,616,513.
    assert n == {"ViT-B-32": 151_277_313, "ViT-B-16": 149_620_737, "ViT-L-14": 427_616_513}[name], (name, n)


def test_live_open_clip_model_round_trip(tmp_path):
  torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'mmjax[torch]'); the fixture "
                              "test above covers the same check against stored open_clip outputs")
  open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
  torch.manual_seed(0)
  model = open_clip.model.CLIP(32, dict(image_size=24, patch_size=6, width=192, layers=3, head_width=64),
                               dict(context_length=12, vocab_size=50, width=64, heads=1, layers=1)).eval()
  torch.save(model.state_dict(), tmp_path / "m.pt")
  sd = oc.load_state_dict(str(tmp_path / "m.pt"))
  rng = np.random.default_rng(0)
  images = rng.standard_normal((3, 24, 24, 3)).astype(np.float32)
  tokens = np.zeros((3, 12), np.int64)
  tokens[:, :5] = rng.integers(1, 49, (3, 5))
  tokens[:, 5] = 49
  with torch.no_grad():
    ref_img = model.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2), normalize=True).numpy()
    ref_txt = model.encode_text(torch.from_numpy(tokens), normalize=True).numpy()
  img, txt, _, _ = _mmjax_embeddings(sd, images, tokens)
  assert np.abs(img - ref_img).max() <= 1e-4 and np.abs(txt - ref_txt).max() <= 1e-4
