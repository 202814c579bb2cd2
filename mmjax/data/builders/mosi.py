"""CMU-MOSI (Zadeh et al. 2016), utterance level: text (100) / audio (73) / video (100) features, binary sentiment.

The features are those of Poria et al. 2017 (text: CNN over word2vec; audio: openSMILE; video: 3D-CNN), one
vector per utterance. Raw files (see `../shared/data/mosi/README.md`, all CSV without header): rows of
`text/text_{split}0.csv`, `audio/audio_{split}0.csv`, `video/video_{split}0.csv` and `text_{split}.csv` align by
position; the latter's column 0 indexes `transcripts.csv` (utterance id, transcript, video number, label).
Splits train 1447 / test 752 utterances (62 / 31 videos, no video in both).

Each example: `text` float32 [100], `audio` float32 [73], `video` float32 [100], `label` 0 = negative,
1 = positive, `utterance_id` ("03bSnISJMiM_10"), `video_id` ("03bSnISJMiM"), `utterance_number` (10; order
within the video, for context models) and `transcript` (upper case).

The prepare checks, for every row, that the labels of the three modality files and of `transcripts.csv`
agree, that the text features of `text_{split}.csv` and `text/text_{split}0.csv` agree (rows aligned) and that
all values are finite; a failing or malformed row raises BadInput naming the file and line (or is skipped,
in all modalities at once, with skip_bad).
"""
from __future__ import annotations

import csv
import math
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.builders import BadInput, MmjaxBuilder, register

DIMS = {"text": 100, "audio": 73, "video": 100}
TRANSCRIPTS = "transcripts.csv"
SPLITS = ("train", "test")
SPLIT_SIZES = {"train": 1447, "test": 752}


def modality_file(modality: str, split: str) -> str:
  return f"{modality}/{modality}_{split}0.csv"


def index_file(split: str) -> str:
  return f"text_{split}.csv"


def _rows(path: pathlib.Path) -> list[tuple[int, list[str]]]:
  """(line number, fields) of every non-blank CSV row; BadInput names the file if it is not UTF-8 CSV."""
  try:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.reader(f, strict=True)
      out = []
      start = 1
      for fields in reader:
        if fields:
          out.append((start, fields))
        start = reader.line_num + 1
      return out
  except (csv.Error, UnicodeDecodeError) as e:
    raise BadInput(f"{path}:{start}", f"malformed CSV ({type(e).__name__}: {e})") from None


def _floats(fields: list[str], where: str) -> np.ndarray:
  try:
    x = np.array([float(v) for v in fields], np.float64)
  except ValueError as e:
    raise BadInput(where, f"malformed row: {e}") from None
  if not np.isfinite(x).all():
    raise BadInput(where, f"non-finite value in column {int(np.flatnonzero(~np.isfinite(x))[0])}")
  return x


def _label(value: str, where: str) -> int:
  try:
    v = float(value)
  except ValueError:
    v = math.nan
  if v not in (0.0, 1.0):
    raise BadInput(where, f"label {value!r} is not 0 or 1")
  return int(v)


def read_features(path: pathlib.Path, dim: int) -> list[tuple[str, np.ndarray, int] | BadInput]:
  """A modality file: rows of `dim` features + a 0/1 label -> [(where, float32 [dim], label) or BadInput]."""
  out: list = []
  for lineno, fields in _rows(path):
    where = f"{path}:{lineno}"
    try:
      if len(fields) != dim + 1:
        raise BadInput(where, f"malformed row: {len(fields)} fields, expected {dim} features + label")
      out.append((where, _floats(fields[:-1], where), _label(fields[-1], where)))
    except BadInput as e:
      out.append(e)
  return out


def read_index(path: pathlib.Path, dim: int) -> list[tuple[str, int, np.ndarray] | BadInput]:
  """`text_{split}.csv`: row index into transcripts.csv + `dim` text features -> [(where, row, [dim]) or BadInput]."""
  out: list = []
  for lineno, fields in _rows(path):
    where = f"{path}:{lineno}"
    try:
      if len(fields) != dim + 1:
        raise BadInput(where, f"malformed row: {len(fields)} fields, expected index + {dim} features")
      if not fields[0].strip().isdigit():
        raise BadInput(where, f"malformed row: transcript index {fields[0]!r} is not a non-negative integer")
      out.append((where, int(fields[0]), _floats(fields[1:], where)))
    except BadInput as e:
      out.append(e)
  return out


def read_transcripts(path: pathlib.Path) -> list[tuple[str, str, str, int] | BadInput]:
  """transcripts.csv -> [(where, utterance_id, transcript, label) or BadInput], in row order."""
  out: list = []
  for lineno, fields in _rows(path):
    where = f"{path}:{lineno}"
    try:
      if len(fields) != 4:
        raise BadInput(where, f"malformed row: {len(fields)} fields, expected utterance_id, transcript, video, label")
      utt = fields[0]
      vid, sep, num = utt.rpartition("_")
      if not sep or not vid or not num.isdigit():
        raise BadInput(where, f"malformed utterance id {utt!r}; expected '<videoID>_<number>'")
      out.append((where, utt, fields[1], _label(fields[3], where)))
    except BadInput as e:
      out.append(e)
  return out


@register("mosi")
class Mosi(MmjaxBuilder):
  VERSION = tfds.core.Version("1.0.0")
  FOLDER = "mosi"
  REQUIRED_FILES = (TRANSCRIPTS, *(index_file(s) for s in SPLITS),
                    *(modality_file(m, s) for m in DIMS for s in SPLITS))
  DESCRIPTION = ("CMU-MOSI utterance-level features (text 100, audio 73, video 100; Poria et al. 2017) with "
                 "binary sentiment; train 1447 / test 752 utterances, no shared video.")
  HOMEPAGE = "https://github.com/declare-lab/contextual-utterance-level-multimodal-sentiment-analysis"
  CITATION = ("Zadeh, Zellers, Pincus, Morency. MOSI: Multimodal Corpus of Sentiment Intensity and Subjectivity "
              "Analysis in Online Opinion Videos. IEEE Intelligent Systems 2016. Poria et al. Context-Dependent "
              "Sentiment Analysis in User-Generated Videos. ACL 2017.")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the files listed in ../shared/data/mosi/README.md in the manual dir."

  def _features(self):
    feats = {m: tfds.features.Tensor(shape=(d,), dtype=np.float32) for m, d in DIMS.items()}
    return tfds.features.FeaturesDict({
        **feats,
        "label": tfds.features.ClassLabel(names=["negative", "positive"]),
        "utterance_id": tfds.features.Text(),
        "video_id": tfds.features.Text(),
        "utterance_number": tfds.features.Scalar(dtype=np.int32),
        "transcript": tfds.features.Text(),
    })

  def _split_generators(self, dl_manager):
    transcripts = read_transcripts(self.raw_dir / TRANSCRIPTS)
    return {split: self._generate_examples(split, transcripts) for split in SPLITS}

  def _generate_examples(self, split, transcripts):
    index_path = self.raw_dir / index_file(split)
    index = read_index(index_path, DIMS["text"])
    modal = {m: (self.raw_dir / modality_file(m, split), read_features(self.raw_dir / modality_file(m, split), d))
             for m, d in DIMS.items()}
    for m, (path, rows) in modal.items():
      if len(rows) != len(index):
        raise BadInput(str(path), f"{len(rows)} rows, but {index_path.name} has {len(index)}; the files of a split "
                                  f"must align row by row")
    for i in self.limited(list(range(len(index)))):
      with self.example_guard():
        for row in [index[i], *(rows[i] for _, rows in modal.values())]:
          if isinstance(row, BadInput):
            raise row
        where_idx, t_row, text_copy = index[i]
        if t_row >= len(transcripts):
          raise BadInput(where_idx, f"transcript index {t_row} is out of range ({len(transcripts)} rows in "
                                    f"{TRANSCRIPTS})")
        transcript = transcripts[t_row]
        if isinstance(transcript, BadInput):
          raise transcript
        where_tr, utt, text, label_tr = transcript
        where_text, text_feats, label = modal["text"][1][i]
        for m in ("audio", "video"):
          where_m, _, label_m = modal[m][1][i]
          if label_m != label:
            raise BadInput(where_m, f"label {label_m} disagrees with label {label} at {where_text}")
        if label_tr != label:
          raise BadInput(where_tr, f"label {label_tr} of {utt} disagrees with label {label} at {where_text} "
                                   f"(row {i + 1} of the {split} split)")
        if not np.allclose(text_copy, text_feats, rtol=1e-4, atol=1e-5):
          raise BadInput(where_idx, f"text features differ from {where_text}; the split files are misaligned")
        video_id, _, number = utt.rpartition("_")
        yield utt, {**{m: modal[m][1][i][1].astype(np.float32) for m in DIMS}, "label": label,
                    "utterance_id": utt, "video_id": video_id, "utterance_number": int(number),
                    "transcript": text}

  @classmethod
  def make_fake_raw(cls, root, n: int = 24, seed: int = 0) -> pathlib.Path:
    """Writes a tiny fake MOSI manual dir in the real format under `root` (returned): n utterances from n // 4
    videos in transcripts.csv, the first half of the videos in train, the rest in test, with features that carry
    the label (a shifted mean), all fields double-quoted like the real files."""
    root = pathlib.Path(root)
    for sub in ("", "text", "audio", "video"):
      (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = "IT WAS REALLY GOOD BAD SAD FUNNY MOVIE THE A LOT OF PARTS AWESOME BORING".split()
    n_videos = max(2, n // 4)
    rows = []
    for u in range(n):
      vid = f"fakeVid{u % n_videos:02d}"
      rows.append((f"{vid}_{u // n_videos + 1}", " ".join(rng.choice(words, size=int(rng.integers(3, 9)))),
                   str(u % n_videos + 1), str(int(rng.integers(2)))))
    order = sorted(range(n), key=lambda u: rows[u][0])
    rows = [rows[u] for u in order]

    def write(path, table):
      with open(path, "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(table)

    write(root / TRANSCRIPTS, rows)
    train_videos = {r[2] for r in rows if int(r[2]) <= n_videos // 2}
    for split in SPLITS:
      ids = [i for i, r in enumerate(rows) if (r[2] in train_videos) == (split == "train")]
      ids = list(rng.permutation(ids))
      labels = [int(rows[i][3]) for i in ids]
      feats = {m: rng.normal(0, 1, (len(ids), d)) + np.array(labels)[:, None] * rng.normal(0, 1, d)
               for m, d in DIMS.items()}
      write(root / index_file(split), [[str(i), *(repr(float(v)) for v in f)] for i, f in zip(ids, feats["text"])])
      for m in DIMS:
        write(root / modality_file(m, split), [[*(repr(float(v)) for v in f), str(lab)]
                                               for f, lab in zip(feats[m], labels)])
    return root
