"""The runtime side never loads the training stack: checked in fresh interpreters via sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib")

# Runs a snippet, then prints the forbidden top-level packages it left in sys.modules.
PROBE = """
import json, sys
{body}
loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({forbidden!r}))
print('LOADED=' + json.dumps(loaded))
"""

RUN_CLI = """
sys.argv = {argv!r}
from leukedge.cli.main import app
try:
    app()
except SystemExit as e:
    print('EXIT=' + str(e.code), file=sys.stderr)
"""


def loaded_modules(body: str) -> tuple[list[str], subprocess.CompletedProcess]:
    code = PROBE.format(body=body, forbidden=FORBIDDEN)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("LOADED="))
    return json.loads(line[len("LOADED="):]), done


def test_import_runtime():
    loaded, _ = loaded_modules("import leukedge.runtime\nfrom leukedge.runtime import Classifier")
    assert loaded == []


def test_cli_help():
    loaded, done = loaded_modules(RUN_CLI.format(argv=["leukedge", "--help"]))
    assert "infer" in done.stdout and "EXIT=0" in done.stderr
    assert loaded == []


@pytest.mark.parametrize("command", ["infer", "info"])
def test_infer_and_info_on_a_model(tiny_model_path, sample_images, command):
    argv = ["leukedge", "infer", str(sample_images[0]), "--model", str(tiny_model_path)]
    if command == "info":
        argv = ["leukedge", "info", str(tiny_model_path)]
    loaded, done = loaded_modules(RUN_CLI.format(argv=argv))
    assert "EXIT=0" in done.stderr, done.stderr
    assert loaded == []
