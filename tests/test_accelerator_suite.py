"""benchmarks/accelerator_suite.sh: its commands name existing scripts with flags and choices those scripts accept
(read from their argparse definitions), in the GPU and the --tiny (CPU) sizes; bad arguments are refused."""
from __future__ import annotations

import ast
import os
import shlex
import subprocess

import pytest

from conftest import ROOT

SUITE = os.path.join(ROOT, "benchmarks", "accelerator_suite.sh")
NAMES = ["clip_b16_bf16", "clip_b32_bf16", "loss_memory", "flip", "input_pipeline"]


def _dry_run(*extra: str) -> dict[str, list[str]]:
  out = subprocess.run(["bash", SUITE, "--dry-run", "--python", "python", *extra], capture_output=True, text=True,
                       check=True, timeout=30).stdout
  return {line.split(": ", 1)[0]: shlex.split(line.split(": ", 1)[1]) for line in out.strip().splitlines()}


def _arguments(script: str) -> dict[str, ast.Call]:
  """--flag -> its ap.add_argument(...) call, from the script's source."""
  tree = ast.parse(open(os.path.join(ROOT, script)).read())
  calls = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
      for a in node.args:
        if isinstance(a, ast.Constant) and str(a.value).startswith("--"):
          calls[a.value] = node
  return calls


def _choices(call: ast.Call, script: str) -> list | None:
  for kw in call.keywords:
    if kw.arg == "choices":
      if isinstance(kw.value, ast.Tuple):
        return [ast.literal_eval(e) for e in kw.value.elts]
      # choices=tuple(PRESETS): the keys of a module-level dict literal of that name
      name = kw.value.args[0].id
      for node in ast.parse(open(os.path.join(ROOT, script)).read()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
          return [ast.literal_eval(k) for k in node.value.keys]
  return None


@pytest.mark.parametrize("extra", [(), ("--tiny",)])
def test_commands_use_flags_and_choices_the_scripts_accept(extra):
  cmds = _dry_run(*extra)
  assert list(cmds) == NAMES
  for name, argv in cmds.items():
    assert argv[0] == "python" and os.path.isfile(os.path.join(ROOT, argv[1])), (name, argv)
    accepted = _arguments(argv[1])
    for i, tok in enumerate(argv[2:], start=2):
      if tok.startswith("--"):
        assert tok in accepted, f"{name}: {argv[1]} has no {tok}"
        choices = _choices(accepted[tok], argv[1])
        if choices is not None:
          assert argv[i + 1] in choices, f"{name}: {tok} {argv[i + 1]} not in {choices}"
  if not extra:   # the accelerator sizes: ViT-B/16 and B/32 in bfloat16, the device's own memory
    assert cmds["clip_b16_bf16"][cmds["clip_b16_bf16"].index("--preset") + 1] == "vit_b16"
    assert cmds["clip_b32_bf16"][cmds["clip_b32_bf16"].index("--preset") + 1] == "vit_b32"
    assert "bfloat16" in cmds["flip"] and "native" in cmds["loss_memory"]


def test_unknown_argument_is_refused():
  proc = subprocess.run(["bash", SUITE, "--bogus"], capture_output=True, text=True, timeout=30)
  assert proc.returncode == 2 and "unknown argument --bogus" in proc.stderr
