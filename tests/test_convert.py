"""mmjax-prepare convert (mmjax/data/convert.py) and data.name="array_record" (array_record_source.py): converted
shards read back and compared with Python's tarfile / csv + PIL reading the sources; a conversion interrupted
(injected exception, SIGKILL mid-shard) then rerun equals one clean run and never exposes a partial shard; the
pipeline serves the webdataset source's batch dict through grain's global shuffle."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tarfile

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax.data import array_record_source, convert, pipeline, record_format, webdataset
from mmjax.data.tokenizer import Tokenizer
from mmjax.errors import MmjaxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image_bytes(seed: int, fmt: str = "JPEG", size: int = 8) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, fmt)
  return buf.getvalue()


def add(tf, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """5 shards x 6 samples (s<shard>_<i>); shard 1 has a PNG, a corrupt JPEG and a sample without caption."""
  d = tmp_path_factory.mktemp("wds")
  for s in range(5):
    with tarfile.open(d / f"{s:03d}.tar", "w") as tf:
      for i in range(6):
        key = f"s{s}_{i}"
        if s == 1 and i == 2:
          add(tf, f"{key}.jpg", b"\xff\xd8 not a jpeg")
        elif s == 1 and i == 3:
          add(tf, f"{key}.png", image_bytes(10 * s + i, "PNG"))
        else:
          add(tf, f"{key}.jpg", image_bytes(10 * s + i))
        if not (s == 1 and i == 4):
          add(tf, f"{key}.txt", f"caption {key} \u00e9".encode())
        add(tf, f"{key}.json", b"{}")
  return str(d / "{000..004}.tar")


def tarfile_reference(pattern: str):
  """[(key, caption, image bytes)] of the good samples, read with tarfile and PIL alone."""
  out = []
  for path in webdataset.expand_braces(pattern):
    with tarfile.open(path) as tf:
      groups: dict[str, dict[str, bytes]] = {}
      for m in tf.getmembers():
        key, ext = m.name.split(".", 1)
        groups.setdefault(key, {})[ext] = tf.extractfile(m).read()
    for key, files in groups.items():
      image = files.get("jpg", files.get("png"))
      if image is None or "txt" not in files:
        continue
      try:
        Image.open(io.BytesIO(image)).load()
      except Exception:
        continue
      out.append((key, files["txt"].decode().strip(), image))
  return out


def run_convert(*args) -> int:
  return convert.main([*map(str, args), "--noprogress"])


@pytest.fixture(scope="module")
def converted(shards, tmp_path_factory):
  out = tmp_path_factory.mktemp("ar") / "out"
  assert run_convert("--from", "webdataset", "--shards", shards, "--out", out) == 0
  return str(out)


def read_all(directory: str):
  src = array_record_source.ArrayRecordImageText(directory)
  return src, [src.record(i) for i in range(len(src))]


def test_webdataset_conversion_matches_tarfile(shards, converted):
  src, records = read_all(converted)
  ref = tarfile_reference(shards)
  assert len(ref) == 5 * 6 - 2 and len(src) == len(ref)
  assert [(m["key"], m["caption"], img) for m, img in records] == ref       # same order, bytes kept as they were
  assert records[ref.index(next(r for r in ref if r[0] == "s1_3"))][0]["ext"] == "png"
  for i, (_, _, image) in enumerate(ref):
    np.testing.assert_array_equal(src[i]["image"], np.asarray(Image.open(io.BytesIO(image)).convert("RGB")))
    assert src[i]["captions"] == [ref[i][1]]
  manifest = record_format.read_manifest(converted)
  assert manifest["complete"] and [s["bad"] for s in manifest["shards"]] == [0, 2, 0, 0, 0]
  assert "s1_2" in manifest["shards"][1]["first_bad"]
  assert sorted(os.listdir(converted)) == sorted([f"{i:05d}.array_record" for i in range(5)] + ["manifest.json"])


def test_csv_conversion_matches_csv_module(tmp_path):
  (tmp_path / "imgs").mkdir()
  rows = []
  for i in range(7):
    (tmp_path / "imgs" / f"{i}.jpg").write_bytes(image_bytes(i))
    rows.append({"filepath": f"imgs/{i}.jpg", "title": f"row {i}" if i != 3 else "a tab\there, a newline\nthere"})
  with open(tmp_path / "t.tsv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["filepath", "title"], delimiter="\t")
    w.writeheader()
    w.writerows(rows)
  out = tmp_path / "out"
  assert run_convert("--from", "csv", "--csv_path", tmp_path / "t.tsv", "--rows_per_shard", 3, "--out", out) == 0
  with open(tmp_path / "t.tsv", newline="") as f:
    ref = list(csv.DictReader(f, delimiter="\t"))
  src, records = read_all(str(out))
  assert len(src.paths) == 3 and src.counts == [3, 3, 1]
  assert [(m["key"], m["caption"]) for m, _ in records] == [(r["filepath"], r["title"]) for r in ref]
  for i, r in enumerate(ref):
    want = np.asarray(Image.open(tmp_path / r["filepath"]).convert("RGB"))
    np.testing.assert_array_equal(src[i]["image"], want)


class Interrupt(Exception):
  pass


def test_interrupted_conversion_then_rerun_equals_a_clean_run(shards, converted, tmp_path):
  units, source = convert.webdataset_units(shards, True)
  source["check_images"] = True                    # as main() records it, so the CLI rerun below continues this run

  def dying(make, after):
    def gen():
      for n, ex in enumerate(make()):
        if n == after:
          raise Interrupt()
        yield ex
    return gen

  broken = [(w, dying(m, 3) if i == 2 else m) for i, (w, m) in enumerate(units)]
  out = tmp_path / "out"
  with pytest.raises(Interrupt):
    convert.convert(broken, source, str(out), progress=False)
  manifest = record_format.read_manifest(str(out))
  assert not manifest["complete"] and [s["file"] for s in manifest["shards"]] == ["00000.array_record",
                                                                                 "00001.array_record"]
  assert sorted(os.listdir(out)) == ["00000.array_record", "00001.array_record", "manifest.json"]
  with pytest.raises(MmjaxError, match="not finished.*rerun"):
    array_record_source.ArrayRecordImageText(str(out))
  first = os.stat(out / "00000.array_record").st_mtime_ns
  assert run_convert("--from", "webdataset", "--shards", shards, "--out", out) == 0
  assert os.stat(out / "00000.array_record").st_mtime_ns == first           # finished shards are not rewritten
  assert_same_conversion(str(out), converted)


def assert_same_conversion(a: str, b: str) -> None:
  assert sorted(os.listdir(a)) == sorted(os.listdir(b))
  assert record_format.read_manifest(a) == record_format.read_manifest(b)
  for name in os.listdir(a):
    if name.endswith(".array_record"):
      with open(os.path.join(a, name), "rb") as f, open(os.path.join(b, name), "rb") as g:
        assert f.read() == g.read(), name


KILLER = """
import os, signal, sys
from mmjax.data import convert
units, source = convert.webdataset_units(sys.argv[1], True)
source["check_images"] = True
def dying(make):
  def gen():
    for n, ex in enumerate(make()):
      if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)      # mid-shard: three records already in its temp file
      yield ex
  return gen
convert.convert([(w, dying(m) if i == 3 else m) for i, (w, m) in enumerate(units)], source, sys.argv[2],
                progress=False)
"""


@pytest.mark.slow
def test_sigkill_mid_shard_then_rerun_equals_a_clean_run(shards, converted, tmp_path):
  out = tmp_path / "out"
  proc = subprocess.run([sys.executable, "-c", KILLER, shards, str(out)], env=dict(os.environ, PYTHONPATH=ROOT),
                        capture_output=True, timeout=120)
  assert proc.returncode == -9, proc.stderr.decode()[-2000:]
  assert (out / ".00003.array_record.tmp").exists()                          # the half-written shard ...
  assert [s["file"] for s in record_format.read_manifest(str(out))["shards"]] == [
      f"{i:05d}.array_record" for i in range(3)]                             # ... is not listed
  with pytest.raises(MmjaxError, match="not finished"):
    array_record_source.ArrayRecordImageText(str(out))
  assert run_convert("--from", "webdataset", "--shards", shards, "--out", out) == 0
  assert_same_conversion(str(out), converted)


def test_two_worker_processes_write_the_same_bytes(shards, converted, tmp_path):
  assert run_convert("--from", "webdataset", "--shards", shards, "--out", tmp_path / "o", "--workers", 2) == 0
  assert_same_conversion(str(tmp_path / "o"), converted)


def test_rerun_with_another_source_is_refused_and_bad_input_can_stop(shards, converted, tmp_path, capsys):
  other = shards.replace("{000..004}", "{000..003}")
  assert run_convert("--from", "webdataset", "--shards", other, "--out", converted) == 2
  assert "another source" in capsys.readouterr().err
  assert run_convert("--from", "webdataset", "--shards", shards, "--out", tmp_path / "o", "--noskip_bad") == 2
  err = capsys.readouterr().err
  assert "001.tar:s1_2.jpg" in err and "--skip_bad" in err and len(err.strip().splitlines()) == 1
  assert [n for n in os.listdir(tmp_path / "o") if n.endswith(".tmp")] == []


def cfg(**kw):
  base = dict(image_size=8, context_length=10, crop_scale=(0.5, 1.0), flip=False, num_workers=0, prefetch=0,
              skip_bad=False, shuffle_buffer=4)
  return ml_collections.ConfigDict(dict(base, **kw))


def test_pipeline_batches_as_the_webdataset_source_with_global_shuffle_and_resume(shards, converted):
  ar, wd = cfg(name="array_record", array_record_dir=converted), cfg(name="webdataset", shards=shards)
  captions = array_record_source.corpus(ar)
  assert captions == [c for _, c, _ in tarfile_reference(shards)]
  tok = Tokenizer.train(captions, 300)
  it = pipeline.make_train_iterator(ar, tok, global_batch_size=4, seed=0)
  ref = next(pipeline.make_train_iterator(wd, tok, global_batch_size=4, seed=0))
  batches = [next(it) for _ in range(7)]                                     # one epoch: 28 examples
  assert {k: (v.shape, v.dtype) for k, v in batches[0].items()} == {k: (v.shape, v.dtype) for k, v in ref.items()}
  for c, batch in ((ar, batches[0]), (wd, ref)):   # the loop's init spec: a map source's and a stream's
    assert pipeline.train_element_spec(c, tok, batch_size=4) == {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
                                                                 for k, v in batch.items()}
  rows = [tuple(r) for b in batches for r in b["tokens"].tolist()]
  assert sorted(rows) == sorted(map(tuple, tok.encode(captions, 10).tolist()))
  assert rows != [tuple(r) for r in tok.encode(captions, 10).tolist()]      # shuffled, not in file order
  it = pipeline.make_train_iterator(ar, tok, global_batch_size=4, seed=0)
  next(it), next(it)
  state = it.get_state()
  again = pipeline.make_train_iterator(ar, tok, global_batch_size=4, seed=0)
  again.set_state(state)
  for want in batches[2:4]:
    got = next(again)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["tokens"], want["tokens"])


def test_mmjax_prepare_convert_command_line(shards, converted, tmp_path, monkeypatch):
  from mmjax.data import prepare
  monkeypatch.chdir(os.path.dirname(shards))                # relative shard paths name the same source
  monkeypatch.setattr(sys, "argv", ["mmjax-prepare", "convert", "--from", "webdataset", "--shards",
                                    os.path.basename(shards), "--out", converted, "--noprogress"])
  with pytest.raises(SystemExit) as e:
    prepare.run()
  assert e.value.code == 0                                   # the finished conversion is recognised, not redone
  monkeypatch.setattr(sys, "argv", ["mmjax-prepare", "convert", "--from", "csv", "--out", str(tmp_path)])
  with pytest.raises(SystemExit) as e:
    prepare.run()
  assert e.value.code == 2


@pytest.mark.slow
def test_clip_webdataset_experiment_trains_on_converted_shards(tmp_path):
  """experiments/clip_webdataset.py:array_record,runlocal (the generated shards converted) runs as every config."""
  from mmjax import config as config_lib
  from mmjax.trainers import config_schema, make_trainer
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", "clip_webdataset.py"),
                                      "array_record,runlocal")
  config_lib.check_keys(config, config_schema(config))
  assert config.data.name == "array_record" and "shards" not in config.data
  results = make_trainer(config, str(tmp_path)).train()
  assert os.listdir(tmp_path / "checkpoints") == [str(config.total_steps)]
  assert results and all(float(v) == float(v) for v in results.values())
