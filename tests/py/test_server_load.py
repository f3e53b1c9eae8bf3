#!/usr/bin/python3
"""`kvserve serve` under load and faults, over loopback: 64 concurrent
streams each get what they get alone; a client that hangs up mid-stream
frees its KV blocks at once; a slow reader does not hold anyone up; a small
KV cache preempts and still gives the same outputs; a shared prefix is
served from the prefix cache; the idle server sleeps; SIGTERM drains
in-flight requests and exits 0.  Every wait is bounded."""

import json
import os
import random
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvs_server_util import STORIES, Checks, Server, assert_error, wait_for  # noqa: E402

PROMPTS = ["Once upon a time", "The cat", "Lily and Ben went to the park", "One day, a little bird",
           "Tom had a big red ball.", "She was sad", "The sun was shining and", "There was a dog named Max"]


def greedy(srv, prompt, n=48, **kw):
    st, r = srv.post("/v1/completions", dict(prompt=prompt, max_tokens=n, temperature=0, **kw))
    assert st == 200, r
    return r["choices"][0]["text"]


def stream_text(srv, body, out, key):
    try:
        st, ev, _ = srv.stream("/v1/completions", dict(body, stream=True))
        assert st == 200 and ev[-1] == "[DONE]", ev
        out[key] = "".join(c["choices"][0]["text"] for c in ev[:-1])
    except Exception as e:  # noqa: BLE001 - collected and asserted by the caller
        out[key] = e


def run_threads(targets, timeout=600):
    ts = [threading.Thread(target=f, args=a, daemon=True) for f, a in targets]
    for t in ts:
        t.start()
    deadline = time.time() + timeout
    for t in ts:
        t.join(max(0.1, deadline - time.time()))
    assert not any(t.is_alive() for t in ts), "clients did not finish in time"


def t_concurrent_streams(srv):
    alone = {p: greedy(srv, p, 48) for p in PROMPTS}
    out = {}
    targets = [(stream_text, (srv, dict(prompt=PROMPTS[i % len(PROMPTS)], max_tokens=48, temperature=0), out, i))
               for i in range(64)]
    run_threads(targets)
    for i in range(64):
        assert out[i] == alone[PROMPTS[i % len(PROMPTS)]], (i, out[i])
    m = wait_for(lambda: (lambda m: m if m["kvserve:num_requests_running"] == 0 else None)(srv.metrics()))
    assert m["kvserve:kv_cache_usage_perc"] == 0.0, m["kvserve:kv_cache_usage_perc"]


def open_stream(port, body):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return s


def read_until(s, marker, limit=1 << 20):
    buf = b""
    while marker not in buf and len(buf) < limit:
        b = s.recv(4096)
        if not b:
            break
        buf += b
    return buf


def idle_metrics(srv):
    def check():
        m = srv.metrics()
        return m if m["kvserve:num_requests_running"] == 0 and m["kvserve:num_requests_waiting"] == 0 else None
    m = wait_for(check, timeout=30)
    assert m, "the server did not go idle"
    return m


def t_disconnect_mid_stream(srv):
    before = idle_metrics(srv)
    s = open_stream(srv.port, dict(prompt="Once upon a time", max_tokens=1900, temperature=0, ignore_eos=True,
                                   stream=True))
    buf = read_until(s, b"data: ")
    buf += read_until(s, b"data: ")
    assert b"200 OK" in buf, buf[:200]
    m = srv.metrics()
    assert m["kvserve:num_requests_running"] == 1 and m["kvserve:kv_cache_usage_perc"] > 0, \
        (m["kvserve:num_requests_running"], m["kvserve:kv_cache_usage_perc"])
    s.close()
    after = idle_metrics(srv)
    assert after["kvserve:kv_cache_usage_perc"] == 0.0, after
    ab = 'kvserve:request_success_total{finished_reason="abort"}'
    assert after[ab] == before[ab] + 1, (before[ab], after[ab])
    # it stopped early: far fewer than 1900 tokens were generated
    gen = after["kvserve:generation_tokens_total"] - before["kvserve:generation_tokens_total"]
    assert gen < 1900, gen
    # the same for a non-streaming request whose client leaves while it runs
    s = open_stream(srv.port, dict(prompt="Once upon a time", max_tokens=1900, temperature=0, ignore_eos=True))
    assert wait_for(lambda: srv.metrics()["kvserve:num_requests_running"] == 1, timeout=30)
    s.close()
    after2 = idle_metrics(srv)
    assert after2[ab] == after[ab] + 1, (after[ab], after2[ab])
    assert after2["kvserve:kv_cache_usage_perc"] == 0.0, after2["kvserve:kv_cache_usage_perc"]
    # a client that leaves before it is answered at all (request still queued or just admitted)
    for _ in range(5):
        s = open_stream(srv.port, dict(prompt="The cat", max_tokens=1500, ignore_eos=True, stream=True))
        s.close()
    after3 = idle_metrics(srv)
    assert after3["kvserve:kv_cache_usage_perc"] == 0.0
    assert greedy(srv, "The cat", 20) == greedy(srv, "The cat", 20)


def t_slow_reader(srv):
    body = dict(prompt="Once upon a time", max_tokens=400, temperature=0, ignore_eos=True)
    ref = greedy(srv, "Once upon a time", 400, ignore_eos=True)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect(("127.0.0.1", srv.port))
    data = json.dumps(dict(body, stream=True)).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    head = read_until(s, b"data: ")
    # while the slow reader sits on its stream, others are served in full
    others = {p: greedy(srv, p, 32) for p in PROMPTS[:4]}
    assert all(others.values())
    buf = head
    while True:
        time.sleep(0.002)
        b = s.recv(256)
        if not b:
            break
        buf += b
    s.close()
    body_txt = buf.partition(b"\r\n\r\n")[2]
    # de-chunk (HTTP/1.1 chunked transfer)
    out, rest = b"", body_txt
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, rest = out + rest[:n], rest[n + 2:]
    events = [json.loads(x[6:]) for x in out.decode().split("\n\n") if x.startswith("data: {")]
    assert out.decode().endswith("data: [DONE]\n\n")
    assert "".join(e["choices"][0]["text"] for e in events) == ref


def t_preemption(srv_big):
    bodies = [dict(prompt=p, max_tokens=120, temperature=0, ignore_eos=True) for p in PROMPTS[:5]]
    alone = [greedy(srv_big, b["prompt"], 120, ignore_eos=True) for b in bodies]
    # 10 blocks of 16 tokens: each request needs 8 blocks at the end, so five at once must preempt
    with Server(STORIES, "--kv-cache-memory", str(10 * 20480), "--max-model-len", "160") as small:
        m0 = small.metrics()
        assert m0["kvserve:kv_cache_blocks"] == 10, m0["kvserve:kv_cache_blocks"]
        out = {}
        run_threads([(stream_text, (small, b, out, i)) for i, b in enumerate(bodies)])
        for i in range(len(bodies)):
            assert out[i] == alone[i], (i, out[i], alone[i])
        m = idle_metrics(small)
        assert m["kvserve:num_preemptions_total"] > 0, m["kvserve:num_preemptions_total"]
        assert m["kvserve:kv_cache_usage_perc"] == 0.0
        # the whole cache is one max_model_len: a request of exactly that fits, one more token does not
        st, r = small.post("/v1/completions", dict(prompt=[1, 403], max_tokens=158, temperature=0))
        assert st == 200 and r["usage"]["total_tokens"] == 160, r
        st, e = small.post("/v1/completions", dict(prompt=[1, 403], max_tokens=159))
        assert_error(st, e, 400, param="max_tokens", code="context_length_exceeded")
        assert small.stop() == 0


def t_prefix_cache(srv):
    rng = random.Random(7)
    a = [1] + [rng.randrange(3, 512) for _ in range(199)]
    b = a + [rng.randrange(3, 512) for _ in range(40)]
    m0 = idle_metrics(srv)
    st, ra = srv.post("/v1/completions", dict(prompt=a, max_tokens=4, temperature=0))
    assert st == 200
    m1 = idle_metrics(srv)
    st, rb = srv.post("/v1/completions", dict(prompt=b, max_tokens=4, temperature=0))
    assert st == 200
    m2 = idle_metrics(srv)
    q, h, comp = ("kvserve:prefix_cache_queries_total", "kvserve:prefix_cache_hits_total",
                  "kvserve:prompt_tokens_computed_total")
    assert m1[h] - m0[h] == 0 and m1[comp] - m0[comp] == 200, (m0, m1)
    shared = (200 // 16) * 16  # full blocks of the shared prefix
    assert m2[q] - m1[q] == 240, m2[q] - m1[q]
    assert m2[h] - m1[h] == shared, m2[h] - m1[h]
    assert m2[comp] - m1[comp] == 240 - shared, m2[comp] - m1[comp]  # only the new tokens were computed
    assert rb["usage"]["prompt_tokens_details"]["cached_tokens"] == shared, rb["usage"]
    assert ra["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert m2["kvserve:prompt_tokens_total"] - m1["kvserve:prompt_tokens_total"] == 240


def t_idle_sleeps(srv):
    idle_metrics(srv)
    stat = "/proc/%d/stat" % srv.proc.pid

    def cpu():
        f = open(stat).read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime + stime, in clock ticks
    c0 = cpu()
    time.sleep(2.0)
    used = (cpu() - c0) / os.sysconf("SC_CLK_TCK")
    assert used < 0.2, "the idle server used %.2f s of CPU in 2 s" % used


def t_sigterm_drains():
    with Server(STORIES) as srv:
        out = {}
        body = dict(prompt="Once upon a time", max_tokens=600, temperature=0, ignore_eos=True)
        ref = greedy(srv, "Once upon a time", 600, ignore_eos=True)
        t = threading.Thread(target=stream_text, args=(srv, body, out, "s"), daemon=True)
        t.start()
        assert wait_for(lambda: srv.metrics()["kvserve:num_requests_running"] == 1, timeout=30)
        srv.proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert out.get("s") == ref, out.get("s")
        assert srv.stop() == 0
        assert any("draining" in line for line in srv.log), srv.log[-3:]


def main():
    checks = Checks()
    with Server(STORIES) as srv:
        checks.run("64 concurrent streams = alone", t_concurrent_streams, srv)
        checks.run("client disconnects -> blocks freed", t_disconnect_mid_stream, srv)
        checks.run("slow reader", t_slow_reader, srv)
        checks.run("preemption keeps outputs", t_preemption, srv)
        checks.run("prefix cache computes only new tokens", t_prefix_cache, srv)
        checks.run("idle server sleeps", t_idle_sleeps, srv)
        rc = srv.stop()

        def exited_0():
            assert rc == 0, rc
        checks.run("SIGTERM exits 0", exited_0)
    checks.run("SIGTERM drains a running request", t_sigterm_drains)
    checks.finish()


if __name__ == "__main__":
    main()
