"""The run's lifecycle (issue 28): signals, the workdir lock, resuming with another config,
the quiet console and log.txt, the ETA and the evaluation's progress.

The end-to-end tests run `train.py` on the default config (configs/default.py's model and
mixture; few steps, a small shapes world, no switch) as subprocesses and stop them with
real signals. The runs share the suite's persistent compilation cache (tests/conftest.py),
so the step compiles once for all of them.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import gcs_emulator as gcs_emulator_lib
from jf_jax.inference import progress as progress_lib
from jf_jax.train import meter as meter_lib
from jf_jax.train import preemption
from jf_jax.train import resume_check
from jf_jax.train import workdir_lock

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 40
# The default config, cut down: a small world, a short encoder pre-training, no mixture
# switch (one compile of the step), no periodic checkpoint (the signal forces one).
SHORT = [f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
         "--config.train.checkpoint_every=1000", "--config.batch.switch.step=0",
         "--config.encoder_pretrain.steps=5", "--config.encoder_pretrain.log_every=5",
         "--config.data.num_train=60", "--config.data.num_validation=4",
         "--config.data.num_test=12",
         "--config.eval.num_gen=4", "--config.eval.num_und=6", "--config.eval.steps=2",
         "--config.eval.batch_size=4", "--config.eval.grid_size=4",
         "--config.eval.show_questions=1"]
NO_EVAL = ["--config.after_training="]  # no evaluation plug-in
LOSSES = ("loss", "ar_loss", "rf_loss", "und_loss", "grad_norm")
ABSL_LINE = re.compile(r"^[IW]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)  # I1203 10:57:42.25...


def _env():
  # One CPU device (the suite's 8 fake devices are for the sharding tests); no LLVM
  # optimisation: a few steps do not pay for it.
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")


def _command(workdir, data_dir, *extra):
  return [sys.executable, "train.py", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *SHORT, *extra]


def _run(workdir, data_dir, *extra, timeout=900) -> subprocess.CompletedProcess:
  return subprocess.run(_command(workdir, data_dir, *extra), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def _run_and_signal(workdir, data_dir, signum, at_step=2, group=False, *extra):
  """Starts train.py, sends `signum` once it logged step `at_step` (to its whole process
  group if `group`, as a terminal's Ctrl-C does); returns (status, stdout, stderr)."""
  proc = subprocess.Popen(_command(workdir, data_dir, *extra), cwd=REPO, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  stderr = []
  drain = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
  drain.start()  # a full stderr pipe would block the run
  lines, deadline = [], time.time() + 900
  for line in proc.stdout:
    lines.append(line)
    if line.startswith(f"step {at_step}/") or time.time() > deadline:
      break
  assert lines and lines[-1].startswith(f"step {at_step}/"), "".join(lines + stderr)[-3000:]
  if group:
    os.killpg(proc.pid, signum)
  else:
    proc.send_signal(signum)
  out, _ = proc.communicate(timeout=600)
  drain.join(timeout=60)
  return proc.returncode, "".join(lines) + out, "".join(stderr)


def _last_losses(workdir) -> dict:
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  last = json.loads(lines[-1])
  return {"step": last["step"], **{k: last[k] for k in LOSSES}}


def _checkpoint_steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(pathlib.Path(workdir) / "checkpoints")
                if d.isdigit())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
  """(workdir, completed process) of a run of all STEPS steps, no evaluation."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  proc = _run(workdir, data_dir, *NO_EVAL)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return workdir, proc


def test_sigterm_checkpoints_exits_143_without_evaluating_and_resumes_exactly(
    tmp_path, data_dir, uninterrupted):
  workdir = tmp_path / "run"
  status, out, err = _run_and_signal(workdir, data_dir, signal.SIGTERM)
  assert status == preemption.PREEMPTED == 143, out[-3000:] + err[-3000:]
  stopped = re.search(r"SIGTERM: stopped at step (\d+), checkpoint saved", out)
  assert stopped, out[-3000:]
  step = int(stopped.group(1))
  assert 2 <= step < STEPS and _checkpoint_steps(workdir) == [step]
  # Nothing that looks final: no evaluation, no scores, no "done".
  assert not (workdir / "main_job.json").exists()
  assert "done at step" not in out and "evaluation," not in out
  assert "Traceback" not in err, err[-3000:]

  resumed = _run(workdir, data_dir, *NO_EVAL)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  assert f"resumed from {workdir} at step {step}" in resumed.stdout
  assert _last_losses(workdir) == _last_losses(uninterrupted[0])
  assert _last_losses(workdir)["step"] == STEPS


def test_console_holds_only_project_lines_and_log_txt_everything(uninterrupted):
  workdir, proc = uninterrupted
  console = proc.stdout + proc.stderr
  assert f"step {STEPS}/{STEPS}" in proc.stdout and "done at step" in proc.stdout
  assert not ABSL_LINE.search(console), ABSL_LINE.findall(console)[:5]
  log = (workdir / "log.txt").read_text()
  orbax = [line for line in log.splitlines() if ABSL_LINE.match(line)
           and "checkpoint_manager.py" in line]
  assert orbax, log[-3000:]  # the library lines the console did not show
  assert f"step {STEPS}/{STEPS}" in log and "encoder pre-trained in" in log  # and its own


def test_ctrl_c_saves_and_exits_130_and_a_stale_lock_does_not_block(tmp_path, data_dir):
  """Ctrl-C as a terminal sends it (to the whole process group), on a workdir holding the
  lock of a run that crashed (its pid is gone)."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(dict(
      pid=int(dead.stdout), host=socket.gethostname(), token="crashed", started="")))
  status, out, err = _run_and_signal(workdir, data_dir, signal.SIGINT, group=True)
  assert status == preemption.INTERRUPTED == 130, out[-3000:] + err[-3000:]
  assert f"replacing the stale lock of pid {int(dead.stdout)}" in out
  assert "SIGINT: stopped at step" in out and "checkpoint saved" in out
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
  assert _checkpoint_steps(workdir) and _checkpoint_steps(workdir)[0] >= 2
  assert not (workdir / workdir_lock.LOCK_NAME).exists()  # released on the way out
  assert not (workdir / "main_job.json").exists()

  # Another model on this workdir: one line naming the key, before anything is built.
  other = _run(workdir, data_dir, "--config.model.llm.num_layers=2", timeout=600)
  assert other.returncode == 2, other.stdout[-2000:] + other.stderr[-3000:]
  assert (f"this workdir ({workdir}) holds a run with model.llm.num_layers=4 (this "
          "config: 2); use a new --workdir or the same config") in other.stderr
  assert "Traceback" not in other.stderr and "pre-training" not in other.stdout

  # A second writer: refused while this test process holds the lock, writing nothing.
  checkpoints = _checkpoint_steps(workdir)
  metrics = (workdir / "metrics.jsonl").read_text()
  log = (workdir / "log.txt").read_text()
  with workdir_lock.hold(str(workdir)):
    second = _run(workdir, data_dir, timeout=600)
  assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-3000:]
  assert (f"workdir {workdir} is in use by pid {os.getpid()} on host "
          f"{socket.gethostname()}") in second.stderr
  assert "pre-training" not in second.stdout and "Traceback" not in second.stderr
  assert _checkpoint_steps(workdir) == checkpoints
  assert (workdir / "metrics.jsonl").read_text() == metrics
  assert (workdir / "log.txt").read_text() == log


_WAITS_FOR_TWO_SIGNALS = """
import time
from jf_jax.train import preemption
stop = preemption.StopRequest()
print("ready", flush=True)
while not stop.requested:
  time.sleep(0.01)
print("first", stop.signum, flush=True)
time.sleep(120)  # a long checkpoint save
print("not reached", flush=True)
"""


def test_second_ctrl_c_exits_at_once():
  proc = subprocess.Popen([sys.executable, "-c", _WAITS_FOR_TWO_SIGNALS], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert proc.stdout.readline() == "ready\n"
  proc.send_signal(signal.SIGINT)
  assert proc.stdout.readline() == f"first {int(signal.SIGINT)}\n"
  start = time.time()
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=30)
  assert proc.returncode == -signal.SIGINT and time.time() - start < 10
  assert "not reached" not in out and "Traceback" not in err
  assert "SIGINT: saving a checkpoint after this step" in err
  assert "Ctrl-C again to exit at once" in err


# The workdir lock, in-process.

def test_lock_refuses_a_second_holder_and_frees_on_release(tmp_path):
  first = workdir_lock.WorkdirLock(str(tmp_path))
  first.acquire()
  with pytest.raises(workdir_lock.WorkdirInUse,
                     match=f"in use by pid {os.getpid()} on host"):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  first.release()
  assert not (tmp_path / workdir_lock.LOCK_NAME).exists()
  with workdir_lock.hold(str(tmp_path)):
    assert (tmp_path / workdir_lock.LOCK_NAME).exists()


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
  path = tmp_path / workdir_lock.LOCK_NAME
  path.write_text(json.dumps(dict(pid=1, host="elsewhere", token="t", started="")))
  with pytest.raises(workdir_lock.WorkdirInUse, match="pid 1 on host elsewhere"):
    workdir_lock.WorkdirLock(str(tmp_path), stale_after_s=600).acquire()
  old = time.time() - 700
  os.utime(path, (old, old))  # not renewed for 700 s > 600 s
  lock = workdir_lock.WorkdirLock(str(tmp_path), stale_after_s=600)
  lock.acquire()
  assert json.loads(path.read_text())["pid"] == os.getpid()
  lock.release()


def test_lock_heartbeat_renews_it(tmp_path):
  path = tmp_path / workdir_lock.LOCK_NAME
  with workdir_lock.hold(str(tmp_path), stale_after_s=2, heartbeat_s=0.2):
    first = json.loads(path.read_text())["renewed"]
    time.sleep(1.0)
    assert json.loads(path.read_text())["renewed"] > first


def test_lock_has_one_winner_among_racing_runs(tmp_path):
  results, winners, barrier = [], [], threading.Barrier(8)

  def contend():
    lock = workdir_lock.WorkdirLock(str(tmp_path))
    barrier.wait()
    try:
      lock.acquire()
      results.append("won")
      winners.append(lock)
    except workdir_lock.WorkdirInUse:
      results.append("refused")

  threads = [threading.Thread(target=contend) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(results) == ["refused"] * 7 + ["won"]
  winners[0].release()


# Resuming with another config, the ETA and the evaluation's progress.

def test_resume_check_names_the_differing_state_keys():
  saved = {"model": {"llm": {"num_layers": 4, "remat_policy": "none"}}, "stage": 2,
           "train": {"num_steps": 100, "ema_decay": 0.0}}
  same_state = {"model": {"llm": {"num_layers": 4, "remat_policy": "full"}}, "stage": 2,
                "train": {"num_steps": 900, "ema_decay": 0.0}}
  assert not resume_check.differences(saved, same_state)
  other = {"model": {"llm": {"num_layers": 2, "remat_policy": "none"}}, "stage": 3,
           "train": {"num_steps": 100, "ema_decay": 0.999}}
  diffs = resume_check.differences(saved, other)
  assert [k for k, _, _ in diffs] == ["model.llm.num_layers", "stage", "train.ema_decay > 0"]
  assert resume_check.describe("W", diffs[:1]) == (
      "this workdir (W) holds a run with model.llm.num_layers=4 (this config: 2); use a "
      "new --workdir or the same config")


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_eta_leaves_out_compile_and_warmup_steps():
  clock = _Clock()
  meter = meter_lib.Meter(400, max_nonfinite_in_row=3, clock=clock, warmup_steps=2)
  for step in range(20):
    clock.now += 60.0 if step == 0 else (2.0 if step < 3 else 0.25)  # compile, warm-up
    meter.step_done(1, 1, recompiled=step == 0)
  assert meter.eta_s(20) == pytest.approx(380 * 0.25)
  clock.now += 30.0  # the switch: the new shapes compile and run at their own speed
  meter.step_done(1, 1, recompiled=True)
  for _ in range(5):
    clock.now += 0.5
    meter.step_done(1, 1)
  assert meter.eta_s(26) == pytest.approx(374 * 0.5)


def test_evaluation_progress_lines():
  clock, lines = _Clock(), []
  progress = progress_lib.Progress("images", 200, clock=clock, out=lines.append)
  for done, seconds in ((50, 40.0), (100, 5.0), (150, 5.0), (200, 5.0)):
    clock.now += seconds
    progress(done)
  assert lines[0] == "evaluation, images 50/200 [#####...............] 40 s eta ?"
  assert lines[1] == "evaluation, images 100/200 [##########..........] 45 s eta 10 s"
  assert lines[3] == "evaluation, images 200/200 [####################] 55 s"


@pytest.fixture(scope="module")
def gcs_emulator():
  """The storage emulator on 127.0.0.1 (tests/gcs_emulator.py) with bucket `bucket`; gcsfs
  in this process talks to it."""
  emulator = gcs_emulator_lib.Emulator()
  previous = {k: os.environ.get(k) for k in emulator.env}
  os.environ.update(emulator.env)
  yield "gs://bucket"
  emulator.stop()
  for key, value in previous.items():
    if value is None:
      os.environ.pop(key)
    else:
      os.environ[key] = value


def test_gcs_lock_refuses_frees_and_replaces_a_stale_lock(gcs_emulator):
  """The gs:// lock object (the emulator ignores ifGenerationMatch, so this checks the
  lock's logic, not the atomicity of its create)."""
  workdir = f"{gcs_emulator}/run"
  first = workdir_lock.WorkdirLock(workdir)
  first.acquire()
  with pytest.raises(workdir_lock.WorkdirInUse,
                     match=f"workdir {workdir} is in use by pid {os.getpid()} on host"):
    workdir_lock.WorkdirLock(workdir).acquire()
  first.release()
  with workdir_lock.hold(workdir):
    pass  # free again after release

  # A lock from another host that is not renewed goes stale.
  import gcsfs  # pylint: disable=g-import-not-at-top
  fs = gcsfs.GCSFileSystem(skip_instance_cache=True)
  path = f"{workdir}/{workdir_lock.LOCK_NAME}"
  fs.pipe_file(path, json.dumps(dict(pid=1, host="elsewhere", token="t", started="")).encode())
  with pytest.raises(workdir_lock.WorkdirInUse, match="pid 1 on host elsewhere"):
    workdir_lock.WorkdirLock(workdir, stale_after_s=30, heartbeat_s=1).acquire()
  time.sleep(2.5)
  with workdir_lock.hold(workdir, stale_after_s=2, heartbeat_s=1):
    fs.invalidate_cache(path)
    assert json.loads(fs.cat_file(path))["pid"] == os.getpid()
  fs.invalidate_cache(path)
  assert not fs.exists(path)
