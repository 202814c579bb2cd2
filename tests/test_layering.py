"""The package's layering, checked statically: no import cycle between mmjax modules, and the model-side packages
(objectives, models, fusion, alignment, layers, encoders) never reach into the loop (mmjax.train) or the evals.

The graph is read with `ast` from every module under mmjax/ (nothing is imported): `import mmjax.a.b`,
`from mmjax.a import b` (an edge to the module mmjax.a.b when that file exists, else to mmjax.a, whose
__init__ defines the name) and relative imports, anywhere in the file (lazy imports inside functions count).
Importing mmjax.a.b also runs mmjax/a/__init__.py, but that implicit edge is not counted: a package's
__init__ importing its own submodules is the registry pattern, and Python resolves it without a cycle.
"""
from __future__ import annotations

import ast
import functools
import os
import shutil


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (importer package, forbidden packages): a module in or under the first imports nothing in or under the second.
RULES = (
  *((f"mmjax.{low}", ("mmjax.train", "mmjax.evals"))
    for low in ("objectives", "models", "fusion", "alignment", "layers", "encoders")),
  ("mmjax.models", ("mmjax.data",)),
  ("mmjax.objectives", ("mmjax.data",)),      # shared vocabulary facts live below both (mmjax/vocab.py)
  ("mmjax.alignment", ("mmjax.objectives", "mmjax.models")),
  *((f"mmjax.{low}", ("mmjax.models", "mmjax.objectives", "mmjax.data")) for low in ("layers", "encoders", "fusion")),
  ("mmjax.train", ("mmjax.rl",)),              # PPO uses the loop's helpers; mmjax/trainers.py picks either
)


def _modules(root: str, package: str = "mmjax") -> dict[str, str]:
  """Module name -> file path for every .py file under root/package (a package is named by its __init__.py)."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(os.path.join(root, package)):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    rel = os.path.relpath(dirpath, root).split(os.sep)
    for f in sorted(filenames):
      if f.endswith(".py"):
        name = ".".join(rel if f == "__init__.py" else rel + [f[:-3]])
        out[name] = os.path.join(dirpath, f)
  return out


def import_graph(root: str = ROOT, package: str = "mmjax") -> dict[str, set[str]]:
  """{module: set of the package's modules it imports}, read statically from the source under root/package."""
  modules = _modules(root, package)
  graph = {}
  for name, path in modules.items():
    is_pkg = path.endswith("__init__.py")
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    deps = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        if node.level:                               # relative: from the importer's package, `level - 1` up
          base = name.split(".") if is_pkg else name.split(".")[:-1]
          base = base[:len(base) - (node.level - 1)]
          mod = ".".join(base + ([node.module] if node.module else []))
        else:
          mod = node.module or ""
        targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
      else:
        continue
      for t in targets:
        while t and t not in modules and "." in t:    # `import mmjax.a.b.name_in_b` -> mmjax.a.b
          t = t.rsplit(".", 1)[0]
        if t in modules and t != name:
          deps.add(t)
    graph[name] = deps
  return graph


def private_imports(root: str = ROOT, package: str = "mmjax") -> list[str]:
  """'importer: from module import _name' for every private name a module imports from another mmjax module, and
  'importer: module._name' for every private attribute it reads of an mmjax module it imported by name
  (`from mmjax.evals import generation` ... `generation._judge(ctx)`)."""
  private = lambda n: n.startswith("_") and not n.startswith("__")
  modules = _modules(root, package)
  out = []
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    aliases = {}                                     # local name -> the mmjax module it is bound to
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith(package):
        for a in node.names:
          if private(a.name):
            out.append(f"{name}: from {node.module} import {a.name}")
          if f"{node.module}.{a.name}" in modules:
            aliases[a.asname or a.name] = f"{node.module}.{a.name}"
      elif isinstance(node, ast.Import):
        aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in modules})
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
          and aliases[node.value.id] != name and private(node.attr)):
        out.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
  return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle [m0, m1, ..., m0] per strongly connected component with more than one module (Tarjan)."""
  index, low, stack, on_stack, comps = {}, {}, [], set(), []

  def strongconnect(v):                               # iterative: the graph is small, but keep off the recursion limit
    work = [(v, iter(sorted(graph.get(v, ()))))]
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    while work:
      node, it = work[-1]
      for w in it:
        if w not in index:
          index[w] = low[w] = len(index)
          stack.append(w)
          on_stack.add(w)
          work.append((w, iter(sorted(graph.get(w, ())))))
          break
        if w in on_stack:
          low[node] = min(low[node], index[w])
      else:
        work.pop()
        if work:
          low[work[-1][0]] = min(low[work[-1][0]], low[node])
        if low[node] == index[node]:
          comp = []
          while True:
            w = stack.pop()
            on_stack.discard(w)
            comp.append(w)
            if w == node:
              break
          if len(comp) > 1:
            comps.append(set(comp))
  # (a module never lists itself: import_graph drops self-imports, so every component here has a real cycle)

  for v in sorted(graph):
    if v not in index:
      strongconnect(v)
  cycles = []
  for comp in comps:                                  # a shortest cycle through the component's first module (BFS)
    start = min(comp)
    prev, frontier, end = {start: None}, [start], None
    while frontier and end is None:
      nxt = []
      for u in frontier:
        for w in sorted(graph[u] & comp):
          if w == start:
            end = u
            break
          if w not in prev:
            prev[w] = u
            nxt.append(w)
        if end is not None:
          break
      frontier = nxt
    path = []
    while end is not None:                            # end, ..., start (prev[start] is None)
      path.append(end)
      end = prev[end]
    cycles.append(path[::-1] + [start])
  return cycles


def _under(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


def layer_violations(graph: dict[str, set[str]], rules=RULES) -> list[str]:
  """'importer -> imported (importer's package must not import forbidden)' for every edge a rule forbids."""
  out = []
  for importer, forbidden in rules:
    for mod in sorted(graph):
      if not _under(mod, importer):
        continue
      for dep in sorted(graph[mod]):
        for bad in forbidden:
          if _under(dep, bad):
            out.append(f"{mod} -> {dep} ({importer} must not import {bad})")
  return out


def _format_cycles(cycles):
  return "import cycles between mmjax modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


@functools.lru_cache(maxsize=None)
def _repo_graph() -> dict[str, set[str]]:
  return import_graph()


def test_no_import_cycle():
  cycles = find_cycles(_repo_graph())
  assert not cycles, _format_cycles(cycles)


def test_layers_import_downwards_only():
  bad = layer_violations(_repo_graph())
  assert not bad, "layering violations:\n" + "\n".join(bad)


def test_no_evaluator_imports_another_evaluators_private_helpers():
  bad = [p for p in private_imports() if p.startswith("mmjax.evals.")]
  assert not bad, "evaluators share helpers through mmjax/evals/base.py, not private names:\n" + "\n".join(bad)


def test_graph_reads_every_import_form():
  g = _repo_graph()
  assert len(g) > 50 and "mmjax.models.clip" in g and "mmjax.objectives" in g
  assert "mmjax.registry" in g["mmjax.models"]                    # from mmjax.registry import MODELS
  assert "mmjax.models.clip" in g["mmjax.models"]                 # from mmjax.models.clip import CLIP
  assert "mmjax.objectives.contrastive" in g["mmjax.objectives"]  # from mmjax.objectives import contrastive


def test_checker_finds_cycles_and_violations_in_a_fake_graph():
  fake = {"mmjax.a": {"mmjax.b"}, "mmjax.b": {"mmjax.c"}, "mmjax.c": {"mmjax.a"}, "mmjax.d": {"mmjax.a"},
          "mmjax.models.m": {"mmjax.train.loop", "mmjax.data.x"}, "mmjax.train.loop": set(), "mmjax.data.x": set()}
  assert find_cycles(fake) == [["mmjax.a", "mmjax.b", "mmjax.c", "mmjax.a"]]
  assert "mmjax.a -> mmjax.b -> mmjax.c -> mmjax.a" in _format_cycles(find_cycles(fake))
  assert find_cycles({"mmjax.a": {"mmjax.b"}, "mmjax.b": set()}) == []
  assert layer_violations(fake) == [
    "mmjax.models.m -> mmjax.train.loop (mmjax.models must not import mmjax.train)",
    "mmjax.models.m -> mmjax.data.x (mmjax.models must not import mmjax.data)"]


def test_checker_fails_on_a_bad_import_in_a_copy(tmp_path):
  """A deliberately bad lazy, relative import in a copy of the package: both a cycle and a layering violation."""
  shutil.copytree(os.path.join(ROOT, "mmjax"), tmp_path / "mmjax", ignore=shutil.ignore_patterns("__pycache__"))
  with open(tmp_path / "mmjax" / "layers" / "mlp.py", "a") as f:
    f.write("\n\ndef _bad():\n  from ..train import loop  # noqa\n")
  g = import_graph(str(tmp_path))
  assert "mmjax.train.loop" in g["mmjax.layers.mlp"]
  assert "mmjax.layers.mlp -> mmjax.train.loop (mmjax.layers must not import mmjax.train)" in layer_violations(g)
  assert any("mmjax.layers.mlp" in c for c in find_cycles(g))   # the loop reaches mlp through the models
  with open(tmp_path / "mmjax" / "evals" / "masked_evals.py", "a") as f:
    f.write("\n\ndef _bad():\n  from mmjax.evals.clip_evals import _zero_shot_data_arrays  # noqa\n")
  with open(tmp_path / "mmjax" / "evals" / "vqa_evals.py", "a") as f:
    f.write("\n\ndef _bad2(ctx):\n  from mmjax.evals import clip_evals as ce\n  return ce._zero_shot_data_arrays(ctx)\n")
  found = private_imports(str(tmp_path))
  assert "mmjax.evals.masked_evals: from mmjax.evals.clip_evals import _zero_shot_data_arrays" in found
  assert "mmjax.evals.vqa_evals: mmjax.evals.clip_evals._zero_shot_data_arrays" in found
