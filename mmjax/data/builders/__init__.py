"""TFDS builders for the real data sets: raw files in a *manual dir* -> `array_record` shards in a *data dir*.

As in TFDS (and big_vision / scenic), a data set is prepared once and then read with random access by grain
(`builder.as_data_source(split)`); no TensorFlow is needed. Here:

  manual dir  `--manual_dir`, else `$MMJAX_RAW_DATA/<folder>` (a root holding one folder per data set), else
              `../shared/data/<folder>` next to the repository (checked from the repository and from the cwd).
  data dir    `--data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (the TFDS default).

Preparing is atomic: TFDS writes into `<data_dir>/<name>/incomplete.*` and renames it to `<version>/` only at
the end, so an interrupted prepare never leaves a data set a later run would read as complete (the stale
`incomplete.*` folders are removed by the next prepare). Bad raw input (a corrupt image or WAV, a malformed
CSV row, a caption naming a missing image) stops the prepare with a one-line error naming the file and line;
with `skip_bad=True` such examples are skipped and counted instead (`builder.skipped`).

A builder module subclasses `MmjaxBuilder` and registers itself with `@register("name")`.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.util
import os
import pathlib
import shutil
from typing import Callable, Iterator

import tensorflow_datasets as tfds

from mmjax.errors import MmjaxError

RAW_ENV = "MMJAX_RAW_DATA"
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]

BUILDERS: dict[str, type["MmjaxBuilder"]] = {}


def register(name: str) -> Callable[[type], type]:
  def deco(cls):
    cls.name = name
    BUILDERS[name] = cls
    return cls
  return deco


def default_manual_dir(folder: str) -> pathlib.Path:
  """Where the raw files of `folder` are looked for when no --manual_dir is given (see module docstring)."""
  if os.environ.get(RAW_ENV):
    return pathlib.Path(os.environ[RAW_ENV]).expanduser() / folder
  candidates = [_REPO_ROOT.parent / "shared" / "data" / folder, pathlib.Path.cwd().parent / "shared" / "data" / folder]
  for c in candidates:
    if c.is_dir():
      return c
  return candidates[0]


def default_data_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


class BadInput(MmjaxError):
  """A raw file that cannot be used: `where` names the file (and line), `what` says why."""

  def __init__(self, where: str, what: str):
    super().__init__(f"{where}: {what}")
    self.where, self.what = where, what


def open_zip(path) -> "zipfile.ZipFile":
  """A raw zip file, or BadInput naming it when it cannot be read."""
  import zipfile
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise BadInput(str(path), f"unreadable zip ({type(e).__name__}: {e})") from None


class MmjaxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the mmjax builders: manual dir checks, `skip_bad`, DatasetInfo without a package metadata dir.

  Subclasses set `name` (via `@register`), `VERSION`, `FOLDER` (the raw folder name), `REQUIRED_FILES`
  (relative paths that must exist in the manual dir), `_features()`, `_split_generators()` and
  `_generate_examples(...)`; inside the latter, wrap per-example work in `with self.example_guard():`.
  """
  FOLDER: str = ""
  REQUIRED_FILES: tuple[str, ...] = ()
  DESCRIPTION = ""
  CITATION = ""
  HOMEPAGE = ""

  def __init__(self, *, manual_dir=None, skip_bad: bool = False, limit: int | None = None, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    kwargs.setdefault("data_dir", os.fspath(default_data_dir()))
    super().__init__(**kwargs)
    self.raw_dir = pathlib.Path(manual_dir).expanduser() if manual_dir else default_manual_dir(self.FOLDER)
    self.skip_bad = skip_bad
    self.limit = limit        # tests: at most `limit` examples per split (a data dir of its own!)
    self.skipped: list[str] = []

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION, features=self._features(),
                                 homepage=self.HOMEPAGE, citation=self.CITATION)

  def _features(self) -> tfds.features.FeaturesDict:
    raise NotImplementedError

  def check_raw_dir(self) -> None:
    if not self.raw_dir.is_dir():
      raise MmjaxError(f"{self.name}: manual dir {self.raw_dir} does not exist; pass --manual_dir DIR or set "
                       f"{RAW_ENV} to a folder holding {self.FOLDER}/")
    for rel in self.REQUIRED_FILES:
      if not (self.raw_dir / rel).exists():
        raise MmjaxError(f"{self.name}: {self.raw_dir / rel} is missing from the manual dir; see the data set's "
                         f"README.md for the expected files")

  @contextlib.contextmanager
  def example_guard(self) -> Iterator[None]:
    """Turns a BadInput into a skip (counted in `self.skipped`) when skip_bad is set."""
    try:
      yield
    except BadInput as e:
      if not self.skip_bad:
        raise
      self.skipped.append(str(e))

  def limited(self, items: list) -> list:
    return items if self.limit is None else items[:self.limit]


def _remove_stale_incomplete(builder: MmjaxBuilder) -> None:
  root = pathlib.Path(builder.data_dir).parent        # <data_dir>/<name>
  for p in root.glob("incomplete.*") if root.is_dir() else ():
    shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: pathlib.Path) -> Iterator[None]:
  """An exclusive lock file, so that two processes never prepare the same data set at once."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def get_builder(name: str, *, manual_dir=None, data_dir=None, skip_bad: bool = False,
                limit: int | None = None) -> MmjaxBuilder:
  _import_all()
  if name not in BUILDERS:
    raise MmjaxError(f"unknown data set {name!r}; prepared data sets: {', '.join(sorted(BUILDERS))}")
  kwargs = {"data_dir": os.fspath(data_dir)} if data_dir else {}
  return BUILDERS[name](manual_dir=manual_dir, skip_bad=skip_bad, limit=limit, **kwargs)


def all_names() -> list[str]:
  _import_all()
  return sorted(BUILDERS)


def is_prepared(builder: MmjaxBuilder) -> bool:
  return pathlib.Path(builder.data_dir, "dataset_info.json").exists()


def prepare(name: str, *, manual_dir=None, data_dir=None, skip_bad: bool = False, limit: int | None = None,
            builder: MmjaxBuilder | None = None) -> MmjaxBuilder:
  """Builds data set `name` unless it is already complete; returns the builder (`.as_data_source(split)`)."""
  b = builder or get_builder(name, manual_dir=manual_dir, data_dir=data_dir, skip_bad=skip_bad, limit=limit)
  if is_prepared(b):
    return b
  with file_lock(pathlib.Path(b.data_dir).parent.parent / f".{b.name}.lock"):
    if is_prepared(b):      # another process finished it while we waited
      return b
    b.check_raw_dir()
    _remove_stale_incomplete(b)
    try:
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(b.raw_dir), download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    except MmjaxError:
      raise
    except Exception as e:  # TFDS wraps errors raised inside generators: surface ours, name the data set otherwise
      cause = e
      while cause is not None and not isinstance(cause, MmjaxError):
        cause = cause.__cause__ or cause.__context__
      if cause is not None:
        raise cause from None
      raise MmjaxError(f"preparing {b.name} from {b.raw_dir} failed: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from e
  return b


MODULES = ("flickr8k", "avmnist", "mosi", "cifar10_test", "cifar100")


def _import_all() -> None:
  for mod in MODULES:
    if importlib.util.find_spec(f"mmjax.data.builders.{mod}") is not None:
      importlib.import_module(f"mmjax.data.builders.{mod}")
