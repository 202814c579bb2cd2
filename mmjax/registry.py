"""Decorator registries: models, objectives, datasets and evaluators are looked up by name from the config."""
from __future__ import annotations

import difflib
from typing import Any, Callable

from mmjax.errors import MmjaxError


class Registry:
  """A name -> object table filled by the `register` decorator."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    def deco(obj):
      if name in self._items:
        raise ValueError(f"{self.kind} {name!r} registered twice")
      self._items[name] = obj
      return obj
    return deco

  def get(self, name: str, key: str = "") -> Any:
    if name not in self._items:
      close = difflib.get_close_matches(name, list(self._items), n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      where = f" (config key {key})" if key else ""
      raise MmjaxError(f"unknown {self.kind} {name!r}{where}; known: {', '.join(sorted(self._items))}{hint}")
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)


MODELS = Registry("model")
OBJECTIVES = Registry("objective")
DATASETS = Registry("dataset")
EVALUATORS = Registry("evaluator")
