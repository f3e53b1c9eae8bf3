#!/usr/bin/python3
"""Benchmark a running `kvserve serve` (or any OpenAI-compatible server) the
way vLLM's benchmark_serving does: N requests of random prompts with given
input/output lengths, sent at a Poisson request rate or with a fixed
concurrency, streamed, and timed per token.

    kvserve serve -m model.gguf --port 8000 &
    bench/serve_bench.py --port 8000 --num-prompts 200 --random-input-len 128 \\
        --random-output-len 128 --max-concurrency 16

Prompts are random token ids drawn from the server's own tokenization of a
fixed English text (POST /tokenize; vLLM's and kvserve's request shape, or
llama-server's `content`/`add_special` when the first gives nothing), so every id is a real, printable token
of the model's vocabulary and each prompt has exactly the asked length.
Requests set ignore_eos so that each produces exactly its output length.

Prints request and token throughput and mean / median / P99 of time to
first token (TTFT), time per output token after the first (TPOT),
inter-token latency (ITL) and end-to-end latency (E2E).  Standard library
only (Debian's /usr/bin/python3)."""

import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
from urllib.parse import urlparse

TEXT = """Once upon a time, in a small village at the edge of a great forest, there lived a girl named Lily who
loved to explore. Every morning she walked with her dog Max to the river, where the water was cold and clear and
the fish jumped in the sun. One day they found an old wooden box under a tree. Inside there was a map, a key and a
letter that said: "Follow the river to the mountain and you will find what was lost." The engine schedules tokens,
the cache keeps keys and values in blocks, and the server streams every new piece of text to the client as soon as
it is ready. Numbers like 3.14159, 2048 and 65536 appear in code; so do words such as memory, budget, request,
latency, throughput, kernel, matrix, vector and attention."""


def percentile(xs, p):
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


class Client:
    def __init__(self, host, port, api_key=None, timeout=600):
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = "Bearer " + api_key

    def post_json(self, path, body):
        c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            c.request("POST", path, json.dumps(body), self.headers)
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError("%s: HTTP %d: %s" % (path, r.status, data[:300]))
            return json.loads(data)
        finally:
            c.close()

    def get_json(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            c.request("GET", path, headers=self.headers)
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError("%s: HTTP %d: %s" % (path, r.status, data[:300]))
            return json.loads(data)
        finally:
            c.close()

    def stream(self, path, body):
        """Send a streaming request; returns (arrival times of text chunks, usage, error)."""
        t0 = time.perf_counter()
        c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        times, usage = [], None
        try:
            c.request("POST", path, json.dumps(body), self.headers)
            r = c.getresponse()
            if r.status != 200:
                return t0, times, None, "HTTP %d: %s" % (r.status, r.read()[:200])
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:]
                if payload == b"[DONE]":
                    break
                ev = json.loads(payload)
                now = time.perf_counter()
                if ev.get("usage"):
                    usage = ev["usage"]
                for ch in ev.get("choices", []):
                    piece = ch.get("text") if "text" in ch else (ch.get("delta") or {}).get("content")
                    if piece or ch.get("logprobs"):
                        times.append(now)
            return t0, times, usage, None
        except Exception as e:  # noqa: BLE001 - a failed request is counted, not fatal
            return t0, times, usage, str(e)
        finally:
            c.close()


def tokenize(cl, text, special):
    """Token ids of text: vLLM/kvserve's /tokenize takes {"prompt", "add_special_tokens"}, llama-server's
    {"content", "add_special"} (and ignores "prompt", answering an empty list); both answer {"tokens"}."""
    ids = None
    try:
        ids = cl.post_json("/tokenize", {"prompt": text, "add_special_tokens": special})["tokens"]
    except RuntimeError:
        pass
    if not ids and (text or special):  # an error, or llama-server's empty answer to a "prompt" it ignores
        ids = cl.post_json("/tokenize", {"content": text, "add_special": special})["tokens"]
    return [t if isinstance(t, int) else t["id"] for t in ids or []]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", help="http://host:port (overrides --host/--port)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key")
    ap.add_argument("--model", help="model name (default: the server's first /v1/models entry)")
    ap.add_argument("--num-prompts", type=int, default=100)
    ap.add_argument("--random-input-len", type=int, default=128)
    ap.add_argument("--random-output-len", type=int, default=128)
    ap.add_argument("--random-range-ratio", type=float, default=0.0,
                    help="lengths drawn uniformly from [len*(1-r), len*(1+r)] (default 0: fixed)")
    ap.add_argument("--request-rate", type=float, default=float("inf"),
                    help="requests per second, Poisson arrivals (default inf: all at once)")
    ap.add_argument("--max-concurrency", type=int, default=0, help="at most this many requests in flight")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", help="also write the results here as JSON")
    a = ap.parse_args()
    if a.base_url:
        u = urlparse(a.base_url)
        a.host, a.port = u.hostname, u.port or 80
    cl = Client(a.host, a.port, a.api_key)
    model = a.model or cl.get_json("/v1/models")["data"][0]["id"]
    rng = random.Random(a.seed)

    tok = tokenize(cl, TEXT, False)
    bos = tokenize(cl, "", True)
    pool = sorted(set(tok))
    if not pool:
        sys.exit("serve_bench: the server's /tokenize gave no tokens for the sample text")

    def draw(n):
        lo, hi = max(1, int(n * (1 - a.random_range_ratio))), max(1, int(n * (1 + a.random_range_ratio)))
        return rng.randint(lo, hi)

    reqs = []
    for _ in range(a.num_prompts):
        n_in, n_out = draw(a.random_input_len), draw(a.random_output_len)
        prompt = bos + [rng.choice(pool) for _ in range(max(1, n_in - len(bos)))]
        reqs.append((prompt, n_out))
    gaps = [0.0 if a.request_rate == float("inf") else rng.expovariate(a.request_rate) for _ in reqs]

    results = [None] * len(reqs)
    sem = threading.Semaphore(a.max_concurrency) if a.max_concurrency > 0 else None

    def one(i):
        prompt, n_out = reqs[i]
        body = {"model": model, "prompt": prompt, "max_tokens": n_out, "temperature": a.temperature,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        try:
            results[i] = cl.stream("/v1/completions", body)
        finally:
            if sem:
                sem.release()

    print("kvserve serve_bench: %d prompts of %d (+-%d%%) input / %d output tokens, model %s, request rate %s, "
          "max concurrency %s" % (a.num_prompts, a.random_input_len, int(a.random_range_ratio * 100),
                                  a.random_output_len, model, a.request_rate, a.max_concurrency or "none"),
          flush=True)
    threads = []
    t_start = time.perf_counter()
    for i in range(len(reqs)):
        if gaps[i] > 0:
            time.sleep(gaps[i])
        if sem:
            sem.acquire()
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    duration = time.perf_counter() - t_start

    ttft, tpot, itl, e2e = [], [], [], []
    n_ok, in_tok, out_tok, errors = 0, 0, 0, []
    for i, r in enumerate(results):
        t0, times, usage, err = r
        if err or not times:
            errors.append(err or "no tokens")
            continue
        n_ok += 1
        n_out = usage["completion_tokens"] if usage else len(times)
        in_tok += usage["prompt_tokens"] if usage else len(reqs[i][0])
        out_tok += n_out
        ttft.append(times[0] - t0)
        e2e.append(times[-1] - t0)
        if n_out > 1:
            tpot.append((times[-1] - times[0]) / (n_out - 1))
        itl += [b - a_ for a_, b in zip(times, times[1:])]

    def ms(xs):
        return [x * 1000 for x in xs]
    res = {
        "model": model, "num_prompts": a.num_prompts, "successful_requests": n_ok, "failed_requests": len(errors),
        "duration_s": duration, "total_input_tokens": in_tok, "total_output_tokens": out_tok,
        "request_throughput": n_ok / duration, "output_throughput": out_tok / duration,
        "total_token_throughput": (in_tok + out_tok) / duration,
    }
    for name, xs in [("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2e)]:
        v = ms(xs)
        res["mean_%s_ms" % name] = statistics.fmean(v) if v else float("nan")
        res["median_%s_ms" % name] = statistics.median(v) if v else float("nan")
        res["p99_%s_ms" % name] = percentile(v, 99)

    w = 50
    print("{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=w, c="="))
    rows = [("Successful requests:", n_ok), ("Failed requests:", len(errors)),
            ("Benchmark duration (s):", "%.2f" % duration), ("Total input tokens:", in_tok),
            ("Total generated tokens:", out_tok), ("Request throughput (req/s):", "%.2f" % res["request_throughput"]),
            ("Output token throughput (tok/s):", "%.2f" % res["output_throughput"]),
            ("Total Token throughput (tok/s):", "%.2f" % res["total_token_throughput"])]
    for k, v in rows:
        print("{:<40} {:<10}".format(k, v))
    for title, key, label in [("Time to First Token", "ttft", "TTFT"),
                              ("Time per Output Token (excl. 1st token)", "tpot", "TPOT"),
                              ("Inter-token Latency", "itl", "ITL"), ("End-to-end Latency", "e2el", "E2EL")]:
        print("{s:{c}^{n}}".format(s=title, n=w, c="-"))
        for stat in ("mean", "median", "p99"):
            print("{:<40} {:<10.2f}".format("%s %s (ms):" % (stat.capitalize() if stat != "p99" else "P99", label),
                                            res["%s_%s_ms" % (stat, key)]))
    print("=" * w)
    if errors:
        print("first errors:", errors[:3], file=sys.stderr)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(res, f, indent=2)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
