"""Workdir helpers shared by every trainer (the supervised loop, mmjax/train/loop.py, and PPO, mmjax/rl/trainer.py):
a writability probe before any compute, and atomic text writes (a reader never sees half a file)."""
from __future__ import annotations

import os

from mmjax.errors import MmjaxError


def check_workdir(workdir: str) -> None:
  """Fails before any compute if the workdir cannot be created or written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise MmjaxError(f"workdir {workdir!r} is not writable ({e.strerror}); choose another --workdir "
                     f"or fix its permissions") from None


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
