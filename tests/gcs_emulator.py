"""A real GCS protocol endpoint on 127.0.0.1 for the tests: `gcp-storage-emulator`, in
memory, behind a small proxy that adds the one thing it lacks.

The emulator ignores suffix ranges (`Range: bytes=-N`), which array_record's reader uses
to read a shard's footer: it answers with the whole object, so shards over its 1 MiB
read-ahead fail. The proxy answers those requests itself (the object's last N bytes, a 206
with a Content-Range); everything else passes through unchanged. The production reader's
options are not touched.

`environment(endpoint)` is what every process of a test needs: gcsfs / etils.epath find
the emulator through STORAGE_EMULATOR_HOST, array_record's own client through
CLOUD_STORAGE_EMULATOR_ENDPOINT; NO_GCE_CHECK and the closed metadata address keep
google-auth from probing the cloud metadata server (tests contact nothing but
127.0.0.1), and GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false saves gcsfs a 60 s gRPC probe per
call. Orbax's arrays go through tensorstore's own GCS client: TENSORSTORE_GCS_HTTP_URL
points it at the emulator and GCE_METADATA_ROOT keeps its credential lookup on loopback.
"""

import http.client
import http.server
import json
import re
import socket
import threading

from gcp_storage_emulator.server import create_server

_SUFFIX = re.compile(r"^bytes=-(\d+)$")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def environment(endpoint: str) -> dict:
  closed = f"127.0.0.1:{free_port()}"  # nothing listens there
  return {"STORAGE_EMULATOR_HOST": endpoint, "CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint,
          "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": closed, "GCE_METADATA_IP": closed,
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
          # Orbax writes arrays through tensorstore's own GCS client.
          "TENSORSTORE_GCS_HTTP_URL": endpoint, "GCE_METADATA_ROOT": closed}


def _proxy_handler(upstream_port: int):
  class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
      del args

    def _forward(self):
      length = int(self.headers.get("Content-Length") or 0)
      body = self.rfile.read(length) if length else None
      headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
      suffix = _SUFFIX.match(self.headers.get("Range", ""))
      if suffix:
        headers.pop("Range", None)
      conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
      conn.request(self.command, self.path, body=body, headers=headers)
      response = conn.getresponse()
      data = response.read()
      status, out_headers = response.status, response.getheaders()
      conn.close()
      if status in (200, 206) and "alt=media" in self.path and not any(
          k.lower() == "x-goog-generation" for k, _ in out_headers):
        out_headers.append(("x-goog-generation", self._generation(upstream_port)))
      if suffix and status == 200:
        total, n = len(data), min(int(suffix.group(1)), len(data))
        data, status = data[total - n:], 206
        out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-range"]
        out_headers.append(("Content-Range", f"bytes {total - n}-{total - 1}/{total}"))
      self.send_response(status)
      for key, value in out_headers:
        if key.lower() not in _HOP_HEADERS:
          self.send_header(key, value)
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      if self.command != "HEAD":
        self.wfile.write(data)

    def _generation(self, port: int) -> str:
      """The object's generation, from its metadata (what a media download's
      x-goog-generation header gives on GCS)."""
      conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
      # /download/storage/v1/b/B/o/NAME serves the data; /storage/v1/b/B/o/NAME the
      # metadata.
      conn.request("GET", self.path.split("?", 1)[0].removeprefix("/download"))
      response = conn.getresponse()
      meta = json.loads(response.read() or b"{}")
      conn.close()
      return str(meta.get("generation", "0"))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

  return Proxy


class Emulator:
  """Started emulator + proxy; `endpoint` is the proxy's http://127.0.0.1:PORT."""

  def __init__(self, buckets=("bucket",)):
    self._port = free_port()
    self._server = create_server("127.0.0.1", self._port, in_memory=True,
                                 default_bucket=buckets[0])
    self._server.start()
    self._proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                  _proxy_handler(self._port))
    self._proxy.daemon_threads = True
    threading.Thread(target=self._proxy.serve_forever, daemon=True).start()
    self.endpoint = f"http://127.0.0.1:{self._proxy.server_address[1]}"
    self.env = environment(self.endpoint)
    self.buckets = tuple(buckets)

  def stop(self) -> None:
    self._proxy.shutdown()
    self._proxy.server_close()
    self._server.stop()
