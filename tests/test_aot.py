"""AOT compile of the tiny train step and sampler for a described TPU v5e 2x2 (libtpu, no TPU).

Runs `python -m jf_jax.tools.aot` as a subprocess (the TPU backend must be set up before
JAX starts, and the test process has 8 fake CPU devices) and checks the report fields.
Skipped only when libtpu is not installed (`pip install -e .[test]` installs it).
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# libtpu comes with the test extra (jax[tpu]); without it these tests fail, not skip.


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("aot") / "report.json")
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, "-m", "jf_jax.tools.aot", "--config=configs/tiny.py",
         "--topology=v5e:2x2", "--config.batch.und_rows=8", "--config.batch.text_rows=8",
         "--config.batch.gen_rows=8", "--config.train.microbatches=2", f"--json_out={out}"]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  with open(out) as f:
    return json.load(f), proc.stdout


def test_report_fields(report):
  r, stdout = report
  assert r["chip"] == "v5e" and r["chips"] == 4
  assert r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  mem = r["train"]["memory"]
  for key in ("argument_bytes", "temp_bytes", "output_bytes", "peak_bytes"):
    assert mem[key] > 0, key
  assert mem["hbm_bytes"] == 16 * 1024 ** 3 and mem["fits"]
  # The state is donated: its buffers alias the outputs.
  assert mem["alias_bytes"] > 0
  assert r["train"]["cost"]["flops"] > 0
  assert r["train"]["step_time_s"] > 0 and 0 < r["train"]["mfu"] < 1
  assert r["train"]["model_flops"]["total"] > 0
  # The microbatches stay on their devices: no all-to-all / collective-permute outside
  # the model in the TPU program either.
  assert r["microbatches"] == 2 and r["train"]["moves"]["outside_model"] == 0
  assert r["sampler"]["memory"]["peak_bytes"] > 0 and r["sampler"]["memory"]["fits"]
  assert "FITS" in stdout and "MFU" in stdout and "sampler" in stdout
  assert "outside the model (moving batch rows): 0" in stdout
  assert "markdown: | v5e:2x2" in stdout


def test_unknown_topology_fails_clearly():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-m", "jf_jax.tools.aot", "--config=configs/tiny.py",
                         "--topology=v5e:3x3x3x3"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode != 0
