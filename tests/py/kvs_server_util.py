"""Helpers for the `kvserve serve` tests: start a server on a free port,
talk HTTP to it over loopback with the standard library only, read its
Prometheus metrics, and always stop it (SIGTERM, then SIGKILL)."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

KVSERVE = os.environ.get("KVSERVE", "")
SHARED = os.environ.get("KVS_SHARED", "")
BUILD = os.environ.get("KVS_BUILD_DIR", "/tmp")
STORIES = os.path.join(SHARED, "models", "stories260K.gguf")
HTTP_TIMEOUT = 120


class Server:
    """A `kvserve serve` child process listening on 127.0.0.1:<free port>."""

    def __init__(self, model, *args, env=None, start_timeout=60):
        cmd = [KVSERVE, "serve", "-m", model, "--port", "0", "--device-memory", "256MiB", *args]
        e = dict(os.environ)
        e.pop("KVSERVE_API_KEY", None)
        if env:
            e.update(env)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=e)
        self.log = []
        self.port = None
        self.returncode = None
        ready = threading.Event()

        def pump():
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace")
                self.log.append(line)
                m = re.search(r"listening on http://[^ ]*:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()
        if not ready.wait(start_timeout) or self.port is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signal the server and wait; SIGKILL if it does not exit. Returns the exit code."""
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.returncode = "killed"
                return self.returncode
        self.pump.join(5)
        self.returncode = self.proc.returncode
        return self.returncode

    # ---- HTTP ----
    def conn(self, timeout=HTTP_TIMEOUT):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
        """(status, headers dict, raw body bytes)."""
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def post(self, path, body, headers=None):
        """(status, parsed JSON body)."""
        st, _, data = self.request("POST", path, body, headers)
        return st, json.loads(data) if data else None

    def get(self, path, headers=None):
        st, _, data = self.request("GET", path, None, headers)
        return st, data

    def stream(self, path, body, headers=None):
        """POST with stream: true; returns (status, [event payloads as parsed JSON or '[DONE]'], raw text)."""
        st, hdrs, data = self.request("POST", path, body, headers)
        text = data.decode("utf-8")
        if st != 200:
            return st, json.loads(text), text
        assert hdrs.get("content-type", "").startswith("text/event-stream"), hdrs
        return st, parse_sse(text), text

    def metrics(self):
        st, data = self.get("/metrics")
        assert st == 200
        return parse_metrics(data.decode())


def parse_sse(text):
    """Server-sent events: each 'data: X' line followed by a blank line."""
    events = []
    assert text.endswith("\n\n"), repr(text[-40:])
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), repr(block[:80])
        payload = block[6:]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def parse_metrics(text):
    """Prometheus text: {name: value} and {name{label=...}: value} (model_name label dropped)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, "bad metrics line: " + line
        name, labels, value = m.groups()
        lab = ""
        if labels:
            parts = [p for p in re.findall(r'(\w+)="([^"]*)"', labels) if p[0] != "model_name"]
            if parts:
                lab = "{" + ",".join('%s="%s"' % p for p in parts) + "}"
        out[name + lab] = float(value)
    return out


def wait_for(pred, timeout=20.0, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def raw_http(port, data, timeout=30, read=True):
    """Send raw bytes, return everything the server sends back until it closes or times out."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return b""
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
                if b"\r\n\r\n" in b"".join(chunks) and response_complete(b"".join(chunks)):
                    break
        except socket.timeout:
            pass
        return b"".join(chunks)
    finally:
        s.close()


def response_complete(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    return bool(m) and len(body) >= int(m.group(1))


class Checks:
    """Counts named checks; a failure prints and is remembered, the run goes on."""

    def __init__(self):
        self.n = 0
        self.failed = []

    def run(self, name, fn, *args):
        t0 = time.time()
        try:
            fn(*args)
            self.n += 1
            print("ok   %-48s %.1fs" % (name, time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001 - report any failure and go on
            import traceback
            traceback.print_exc()
            self.failed.append(name)
            print("FAIL %-48s %s" % (name, e), flush=True)

    def finish(self):
        print("%d checks passed, %d failed%s" % (self.n, len(self.failed),
                                                  (": " + ", ".join(self.failed)) if self.failed else ""))
        sys.exit(1 if self.failed else 0)


def assert_error(status, body, want_status, param=None, code=None, contains=None):
    """An OpenAI-style error object with the right status (and param/code/message text)."""
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    e = body["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert isinstance(e["message"], str) and e["message"], e
    assert e["type"] == ("server_error" if want_status >= 500 else "invalid_request_error"), e
    if param is not None:
        assert e["param"] == param, (e, param)
    if code is not None:
        assert e["code"] == code, (e, code)
    if contains is not None:
        assert contains in e["message"], (e["message"], contains)
