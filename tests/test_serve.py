"""`python -m jf_jax.serve` end to end: one real server process on 127.0.0.1 serving the
tiny checkpoint, driven by the official `openai` client, raw HTTP and a headless Chromium.

The server and `sample.py` run as subprocesses on one CPU device with the same
environment, so their outputs can be compared bit for bit. One batch bucket of 4 rows
(sample.py's bucket for --num=4) and the smallest default prompt and answer buckets, so
startup compiles two shapes and every comparison is between calls of one compiled shape:
XLA:CPU may round a row differently in another batch shape (seen: one pixel of 3,072 off
by one between batch 1 and 8), while in one shape a row never depends on the others.
"""

import base64
import concurrent.futures
import io
import signal
import threading
import time

import httpx
import numpy as np
import openai
from PIL import Image
from prometheus_client import parser as prom_parser
import pytest

from jf_jax.serve import media
import serve_helpers
import tiny_checkpoint

KEY = "test-key"
SIZE = tiny_checkpoint.config().model.latent_size  # pixel space: images are latent-sized
MAX_QUEUE, MAX_N, MAX_BODY, MAX_PIXELS = 40, 8, 300_000, 64 * 64
SERVER_FLAGS = [
    f"--api_key={KEY}", "--config.max_wait_ms=200",
    "--config.engine.batch_buckets=(4,)", "--config.engine.gen_prompt_buckets=(64,)",
    "--config.engine.und_prompt_buckets=(128,)", "--config.engine.max_tokens_buckets=(64,)",
    f"--config.limits.max_queue={MAX_QUEUE}", f"--config.limits.max_n={MAX_N}",
    f"--config.limits.max_body_bytes={MAX_BODY}",
    f"--config.limits.max_image_pixels={MAX_PIXELS}"]
QUESTIONS = ["how many shapes are there?", "what color is the circle?", "is there a square?",
             "where is the triangle?"]
PROMPTS = ["a red circle", "a blue square to the left of a green triangle", "a red square",
           "two green circles"]


def _png(seed: int, shape=(40, 30, 3)) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, shape, np.uint8)).save(
      buffer, format="PNG")
  return buffer.getvalue()


def _data_url(png: bytes) -> str:
  return "data:image/png;base64," + base64.b64encode(png).decode()


def _chat_messages(png: bytes, question: str) -> list:
  return [{"role": "user", "content": [
      {"type": "image_url", "image_url": {"url": _data_url(png)}},
      {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """(base URL, process, root folder) of a server on the tiny checkpoint, ready."""
  root = tmp_path_factory.mktemp("serve")
  tiny_checkpoint.write_params_dir(str(root / "ckpt"))
  with serve_helpers.serving(root / "ckpt", SERVER_FLAGS, root / "server.log") as (base, proc):
    yield base, proc, root


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0, timeout=600)


_sample_py = serve_helpers.sample_py


def _generate(client, prompt: str, seed: int, n: int = 1, steps: int = 2) -> np.ndarray:
  result = client.images.generate(model="ckpt", prompt=prompt, n=n, size=f"{SIZE}x{SIZE}",
                                  response_format="b64_json",
                                  extra_body={"steps": steps, "guidance": 2.0, "seed": seed})
  return np.stack([media.from_png_base64(d.b64_json) for d in result.data])


def _ask(client, png: bytes, question: str, max_tokens: int = 8) -> str:
  result = client.chat.completions.create(model="ckpt", messages=_chat_messages(png, question),
                                          max_tokens=max_tokens, temperature=0.0)
  return result.choices[0].message.content


def _device_calls(base: str) -> float:
  text = httpx.get(f"{base}/metrics").text
  return sum(s.value for family in prom_parser.text_string_to_metric_families(text)
             if family.name == "jf_device_calls" for s in family.samples
             if s.name == "jf_device_calls_total")


# ---------------------------------------------------------------- the openai client
def test_images_match_sample_py(server, client):
  _, _, root = server
  out = root / "grid.png"
  _sample_py(f"--checkpoint={root / 'ckpt'}", "--prompt=a red circle", f"--out={out}",
             "--num=4", "--steps=2", "--cfg=2.0", "--seed=7", "--min_tile=1")
  # --min_tile=1: tiles at the model's size (no upscaling); 4 images: 2 x 2, row-major.
  grid = np.asarray(Image.open(out).convert("RGB"))
  tiles = [grid[r * SIZE:(r + 1) * SIZE, c * SIZE:(c + 1) * SIZE] for r in (0, 1) for c in (0, 1)]
  served = _generate(client, "a red circle", seed=7, n=4)
  assert served.shape == (4, SIZE, SIZE, 3)
  for image, tile in zip(served, tiles):
    np.testing.assert_array_equal(image, tile)
  assert not np.array_equal(served[0], served[1])  # each image has its own noise key


def test_chat_matches_sample_py(server, client):
  _, _, root = server
  png = _png(3)
  (root / "cat.png").write_bytes(png)
  proc = _sample_py(f"--checkpoint={root / 'ckpt'}", f"--image={root / 'cat.png'}",
                    f"--question={QUESTIONS[0]}", "--max_new_tokens=8")
  want = proc.stdout.rstrip("\n").split("\n")[-1]
  result = client.chat.completions.create(model="ckpt", messages=_chat_messages(png, QUESTIONS[0]),
                                          max_tokens=8)
  assert result.choices[0].message.content == want and want
  usage = result.usage
  assert usage.completion_tokens >= 1 and usage.prompt_tokens > 0
  assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
  stream = client.chat.completions.create(
      model="ckpt", messages=_chat_messages(png, QUESTIONS[0]), max_tokens=8, stream=True,
      stream_options={"include_usage": True})
  chunks = list(stream)
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert text == want and len([c for c in chunks if c.choices]) > 2
  assert chunks[-1].usage.total_tokens == usage.total_tokens


def test_models_health_and_seed(server, client):
  assert [m.id for m in client.models.list().data] == ["ckpt"]
  health = httpx.get(f"{server[0]}/health").json()
  assert health["status"] == "ok" and health["image_size"] == SIZE
  result = client.images.generate(model="ckpt", prompt="a red square", size=f"{SIZE}x{SIZE}",
                                  response_format="b64_json", extra_body={"steps": 2})
  seed = result.model_extra["seed"]  # a request without a seed gets one, returned
  again = _generate(client, "a red square", seed=seed)
  np.testing.assert_array_equal(media.from_png_base64(result.data[0].b64_json), again[0])


def test_concurrent_mixed_requests_share_device_calls(server, client):
  """32 requests from threads at once: all succeed, each equals its one-at-a-time result,
  and they took fewer device calls than requests."""
  base = server[0]
  jobs = []
  for i in range(16):
    jobs.append(("image", PROMPTS[i % 4], 100 + i))
    jobs.append(("chat", _png(i % 5), QUESTIONS[i % 4]))

  def run(job):
    kind, a, b = job
    return _generate(client, a, seed=b) if kind == "image" else _ask(client, a, b)

  before = _device_calls(base)
  barrier = threading.Barrier(len(jobs))

  def together(job):
    barrier.wait()
    return run(job)

  with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
    together_results = list(pool.map(together, jobs))
  calls = _device_calls(base) - before
  assert calls < len(jobs), f"{calls} device calls for {len(jobs)} requests"
  for job, result in zip(jobs, together_results):
    alone = run(job)
    if job[0] == "image":
      np.testing.assert_array_equal(result, alone)
    else:
      assert result == alone


# ------------------------------------------------------------------ bad requests
def _post(base, path, *, json=None, content=None, headers=None):
  headers = {"Authorization": f"Bearer {KEY}", **(headers or {})}
  return httpx.post(f"{base}{path}", json=json, content=content, headers=headers,
                    timeout=600)


def _chat_body(**overrides):
  body = {"model": "ckpt", "messages": _chat_messages(_png(1), "what is it?"), "max_tokens": 4}
  body.update(overrides)
  return body


BAD_REQUESTS = [
    # (name, path, kwargs, status, message part, param)
    ("malformed JSON", "/v1/chat/completions",
     {"content": b'{"messages": [', "headers": {"Content-Type": "application/json"}},
     400, "not valid JSON", None),
    ("wrong type", "/v1/chat/completions", {"json": _chat_body(max_tokens="lots")},
     400, "max_tokens", "max_tokens"),
    ("wrong role", "/v1/chat/completions",
     {"json": _chat_body(messages=[{"role": "robot", "content": "hi"}])},
     400, "messages[0].role", "messages[0].role"),
    ("empty messages", "/v1/chat/completions", {"json": _chat_body(messages=[])},
     400, "at least one message", "messages"),
    ("no image", "/v1/chat/completions",
     {"json": _chat_body(messages=[{"role": "user", "content": "hello"}])},
     400, "exactly one image", "messages"),
    ("undecodable image", "/v1/chat/completions", {"json": _chat_body(messages=[
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "what?"}]}])},
     400, "could not be decoded", "messages[0].content[0].image_url"),
    ("http URL", "/v1/chat/completions", {"json": _chat_body(messages=[
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/cat.png"}},
            {"type": "text", "text": "what?"}]}])},
     400, "only data: URLs", "messages[0].content[0].image_url"),
    ("local file", "/v1/chat/completions", {"json": _chat_body(messages=[
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
            {"type": "text", "text": "what?"}]}])},
     400, "only data: URLs", "messages[0].content[0].image_url"),
    ("too many pixels", "/v1/chat/completions", {"json": _chat_body(messages=_chat_messages(
        _png(2, (100, 100, 3)), "what?"))}, 413, "over the limit", None),
    ("max_tokens over the limit", "/v1/chat/completions", {"json": _chat_body(max_tokens=65)},
     400, "limit of 64", "max_tokens"),
    ("body too large", "/v1/chat/completions",
     {"content": b"x" * (MAX_BODY + 1), "headers": {"Content-Type": "application/json"}},
     413, "body is over the limit", None),
    ("wrong size", "/v1/images/generations", {"json": {"prompt": "a red circle",
                                                       "size": "1024x1024"}},
     400, f"{SIZE}x{SIZE}", "size"),
    ("n over the limit", "/v1/images/generations",
     {"json": {"prompt": "a red circle", "n": MAX_N + 1}}, 400, f"limit of {MAX_N}", "n"),
    ("empty prompt", "/v1/images/generations", {"json": {"prompt": "  "}},
     400, "must not be empty", "prompt"),
    ("wrong key", "/v1/models", {"headers": {"Authorization": "Bearer nope"}},
     401, "API key", None),
    ("unknown route", "/v1/edits", {"json": {}}, 404, "Not Found", None),
]


@pytest.mark.parametrize("name,path,kwargs,status,message,param", BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request(server, client, name, path, kwargs, status, message, param):
  base = server[0]
  if name == "wrong key":
    response = httpx.get(f"{base}{path}", headers=kwargs["headers"])
  else:
    response = _post(base, path, **kwargs)
  assert response.status_code == status, response.text
  error = response.json()["error"]
  assert message in error["message"] and error["type"]
  if param is not None:
    assert error["param"] == param
  assert _ask(client, _png(0), QUESTIONS[0], max_tokens=2) is not None  # the server goes on


def test_bad_requests_do_not_fail_the_batch_they_arrive_with(server, client):
  bad = _chat_body(messages=_chat_messages(b"not a png", "what?"))
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    goods = [pool.submit(_ask, client, _png(i), QUESTIONS[i % 4]) for i in range(4)]
    bads = [pool.submit(_post, server[0], "/v1/chat/completions", json=bad) for _ in range(4)]
    assert all(isinstance(g.result(), str) for g in goods)
    assert all(b.result().status_code == 400 for b in bads)


def test_a_full_queue_is_a_429(server, client):
  body = {"prompt": "a red circle", "n": MAX_N, "steps": 100, "seed": 0}
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    statuses = [f.result().status_code for f in
                [pool.submit(_post, server[0], "/v1/images/generations", json=body)
                 for _ in range(8)]]
  assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}
  assert _ask(client, _png(0), QUESTIONS[0], max_tokens=2) is not None


# ------------------------------------------------------------------- the browser
def test_demo_page_in_headless_chromium(server, client, tmp_path):
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  options = webdriver.ChromeOptions()
  options.binary_location = "/usr/bin/chromium"
  for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
  try:
    driver.get(server[0] + "/")
    driver.find_element(By.ID, "key").send_keys(KEY)
    driver.find_element(By.ID, "prompt").send_keys("a red circle")
    for field, value in (("steps", "2"), ("seed", "11")):
      driver.find_element(By.ID, field).clear()
      driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.ID, "generate").click()
    wait = WebDriverWait(driver, 300)
    img = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "img.generated"))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && "
                                          "arguments[0].naturalWidth > 0", img))
    driver.save_screenshot(str(tmp_path / "demo.png"))
    assert driver.execute_script("return [arguments[0].naturalWidth, "
                                 "arguments[0].naturalHeight]", img) == [SIZE, SIZE]
    assert "seed 11" in driver.find_element(By.CSS_SELECTOR, "figcaption").text
    src = img.get_attribute("src")
    np.testing.assert_array_equal(media.from_png_base64(src.split(",", 1)[1]),
                                  _generate(client, "a red circle", seed=11)[0])
    assert Image.open(tmp_path / "demo.png").size[0] > 0

    png = _png(4)
    (tmp_path / "upload.png").write_bytes(png)
    driver.find_element(By.ID, "upload").send_keys(str(tmp_path / "upload.png"))
    driver.find_element(By.ID, "question").send_keys(QUESTIONS[0])
    driver.find_element(By.ID, "ask").click()
    answer = driver.find_element(By.ID, "answer")
    wait.until(lambda d: answer.get_attribute("data-done") == "true")
    assert "error" not in answer.get_attribute("class"), answer.text
    want = _ask(client, png, QUESTIONS[0], max_tokens=64)  # the server's default
    assert want and answer.text == want
  finally:
    driver.quit()


# ------------------------------------------------------------------ --quantize int8
@pytest.fixture(scope="module")
def int8_server(server):
  """(base URL, openai client) of a second server on the same checkpoint, int8 LLM."""
  root = server[2]
  with serve_helpers.serving(root / "ckpt", [*SERVER_FLAGS, "--quantize=int8"],
                             root / "server_int8.log") as (base, _):
    yield base, openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=600)


def test_int8_server_matches_sample_py_int8(server, int8_server):
  """`--quantize int8` serves what sample.py gives with the same quantization."""
  root = server[2]
  base, client = int8_server
  assert httpx.get(f"{base}/health").json()["quantize"] == "int8"
  out = root / "grid_int8.png"
  _sample_py(f"--checkpoint={root / 'ckpt'}", "--quantize=int8", "--prompt=a red circle",
             f"--out={out}", "--num=4", "--steps=2", "--cfg=2.0", "--seed=7", "--min_tile=1")
  grid = np.asarray(Image.open(out).convert("RGB"))
  tiles = [grid[r * SIZE:(r + 1) * SIZE, c * SIZE:(c + 1) * SIZE] for r in (0, 1) for c in (0, 1)]
  for image, tile in zip(_generate(client, "a red circle", seed=7, n=4), tiles):
    np.testing.assert_array_equal(image, tile)
  png = _png(3)
  (root / "cat_int8.png").write_bytes(png)
  proc = _sample_py(f"--checkpoint={root / 'ckpt'}", "--quantize=int8",
                    f"--image={root / 'cat_int8.png'}", f"--question={QUESTIONS[0]}",
                    "--max_new_tokens=8")
  want = proc.stdout.rstrip("\n").split("\n")[-1]
  assert want and _ask(client, png, QUESTIONS[0]) == want


# ---------------------------------------------------------------------- shutdown
def test_sigterm_finishes_requests_in_flight(server, client):
  """Last: SIGTERM while a slow request runs; it is answered, then the server exits."""
  base, proc, _ = server
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    slow = pool.submit(_post, base, "/v1/images/generations",
                       json={"prompt": "a red circle", "n": MAX_N, "steps": 200, "seed": 0})
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    response = slow.result()
  assert response.status_code == 200, response.text
  assert proc.wait(timeout=120) == 0
