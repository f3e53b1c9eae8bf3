#!/usr/bin/python3
"""Non-streamed answers are built in the answer pool (--http-answer-pool).

A non-streamed answer keeps its choices' text and per-token logprob records
in runs of one pool reserved at start-up, and writes its JSON document into
one more run: nothing grows past the pool.  Checked here:

  * an answer with logprobs whose records could never fit the pool is a
    400 (answer_too_large, naming the bytes and --http-answer-pool) before
    anything is computed;
  * answers that fit alone but not all at once give a clean 503 (code
    server_busy, Retry-After, the message naming --http-answer-pool),
    counted in /metrics, and every run comes back: the next answer is a
    200 and the pool's use returns to 0;
  * the pool is a term of the serving reserve: `plan` grows by exactly the
    pool's size over the default (4 KiB per connection + 512 KiB), so the
    KV cache shrinks by it;
  * sizes outside 64 KiB..1 TiB are refused, naming the flag."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memtest_util as mt  # noqa: E402
from kvs_server_util import Server  # noqa: E402

failures = []


def check(cond, what):
    print("%-4s %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        failures.append(what)



def plan_serving(*flags):
    import json
    p = subprocess.run([mt.KVSERVE, "plan", "-m", mt.STORIES, "--device-memory", "1GiB", "--json"] + list(flags),
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return None, p.stderr
    return json.loads(p.stdout)["serving_reserve_bytes"], p.stderr


def main():
    # a pool of 64 KiB: 4 choices of 300 tokens with 5 logprobs need 4 x 20 KiB of records (64 bytes each,
    # one run of whole pages per choice), a first 4 KiB run of text each and one to send from (100 KiB): it
    # could never fit, so it is a 400 before anything is computed
    # one sequence at a time: a request admitted stays in the pool while the ones before it run
    with Server(mt.STORIES, "--max-model-len", "512", "--http-answer-pool", "64KiB", "--max-num-seqs", "1") as s:
        import json
        body = dict(prompt="Once upon a time", max_tokens=300, ignore_eos=True, temperature=0.9, seed=1, n=4,
                    logprobs=5)
        st, hdrs, data = s.request("POST", "/v1/completions", body)
        r = json.loads(data) if data else {}
        err = r.get("error") or {}
        check(st == 400, "an answer that could never fit the pool: status %s" % st)
        check(err.get("code") == "answer_too_large" and err.get("param") == "logprobs" and
              "--http-answer-pool" in (err.get("message") or "") and "102400" in (err.get("message") or ""),
              "... answer_too_large on logprobs, naming the 102400 bytes and --http-answer-pool: %r" % err)
        m = s.metrics()
        check(m.get("kvserve:requests_refused_memory_total") == 0, "... not a refusal for memory")
        # echo adds a record per prompt token: 2 x (300 + 5) records fit in 2 runs of 20 KiB (52 KiB in all)
        st, r = s.post("/v1/completions", dict(prompt="Once upon a time", n=2, logprobs=5, max_tokens=300,
                                               echo=True, ignore_eos=True))
        check(st == 200 and len(r["choices"][0]["logprobs"]["tokens"]) == 305, "n=2 with echo fits: %s" % st)
        # ... 400 + 5 do not (2 x 28 KiB + 12 KiB)
        st, r = s.post("/v1/completions", dict(prompt="Once upon a time", n=2, logprobs=5, max_tokens=400,
                                               echo=True))
        check(st == 400 and r["error"]["code"] == "answer_too_large", "n=2 with echo, 400 tokens: %s" % st)
        # without logprobs: the first runs of text of 20 choices (and the one to send from) cannot fit
        st, r = s.post("/v1/completions", dict(prompt="Once upon a time", n=20, max_tokens=4))
        check(st == 400 and r["error"]["param"] == "n", "n=20 without logprobs: %s %s" % (st, r.get("error")))
        # streamed, it keeps no records: served
        st, hdrs, data = s.request("POST", "/v1/completions", dict(body, stream=True, max_tokens=20))
        check(st == 200 and data.rstrip().endswith(b"[DONE]"), "streamed: %s" % st)

        # a holder (4 choices without logprobs, 2000 steps one after another: 20 KiB of runs) is admitted;
        # while it runs, a request that fits alone (2 choices x 20 KiB of records and 3 runs: 52 KiB) finds
        # the pool busy and gets the 503 at once, before anything is computed
        import threading
        import time
        held = {}
        holder = threading.Thread(target=lambda: held.update(r=s.post("/v1/completions", dict(
            prompt="Once upon a time", n=4, max_tokens=500, ignore_eos=True, temperature=0.9, seed=2))))
        holder.start()
        t0 = time.time()
        while s.metrics().get("kvserve:http_answer_pool_used_bytes", 0) == 0 and time.time() - t0 < 30:
            time.sleep(0.001)
        st, hdrs, data = s.request("POST", "/v1/completions", dict(body, n=2))
        holder.join()
        check(held.get("r", (0,))[0] == 200 and len(held["r"][1]["choices"]) == 4, "the holder is answered")
        check(st == 503, "52 KiB while 20 KiB of the 64 KiB pool are held: %s" % st)
        err = (json.loads(data).get("error") or {}) if data else {}
        check(err.get("code") == "server_busy" and "--http-answer-pool" in (err.get("message") or ""),
              "... server_busy, naming --http-answer-pool: %r" % err)
        check(any(k.lower() == "retry-after" for k, _ in (hdrs.items() if hasattr(hdrs, "items") else hdrs)),
              "... with Retry-After")
        codes = [st]
        st, r = s.post("/v1/completions", dict(body, n=2))
        check(st == 200 and len(r["choices"]) == 2 and len(r["choices"][1]["logprobs"]["tokens"]) == 300,
              "the same request once the holder is done: %s" % st)
        n503 = codes.count(503)
        st, r = s.post("/v1/completions", dict(prompt="Once upon a time", max_tokens=20, temperature=0, logprobs=2))
        check(st == 200 and len(r["choices"][0]["logprobs"]["tokens"]) == r["usage"]["completion_tokens"],
              "a small answer after it: status %s" % st)
        m = s.metrics()
        check(m.get("kvserve:http_answer_pool_capacity_bytes") == 65536,
              "capacity %s" % m.get("kvserve:http_answer_pool_capacity_bytes"))
        check(m.get("kvserve:http_answer_pool_used_bytes") == 0, "use back to 0: %s" %
              m.get("kvserve:http_answer_pool_used_bytes"))
        check(m.get("kvserve:http_refused_answers_total", m.get("kvserve:http_refused_answers", 0)) >= 1,
              "refusals counted")
        check(m.get("kvserve:requests_refused_memory_total") == n503,
              "each refused answer counted once in requests_refused_memory: %s for %d" %
              (m.get("kvserve:requests_refused_memory_total"), n503))
        hw = m.get("kvserve:http_answer_pool_high_water_bytes", 0)
        check(0 < hw <= 65536, "high-water %s within the pool" % hw)
    if s.returncode not in (0, None):
        failures.append("serve exited %s" % s.returncode)

    base, _ = plan_serving()
    big, _ = plan_serving("--http-answer-pool", "64MiB")
    conns, _ = plan_serving("--max-connections", "10")
    default = 64 * 4096 + (512 << 10)
    check(base is not None and big is not None and big - base == (64 << 20) - default,
          "plan: serving reserve %s -> %s with a 64 MiB pool (default %d)" % (base, big, default))
    # 54 fewer connections: 54 x (4 KiB of answer pool + the front end's per-connection share)
    check(conns is not None and base - conns > 54 * 4096, "plan: fewer connections, a smaller reserve")
    for bad in ("1000", "2TiB"):
        v, err = plan_serving("--http-answer-pool", bad)
        check(v is None and "--http-answer-pool" in err, "--http-answer-pool %s refused: %s" % (bad, err.strip()))
    if failures:
        sys.exit("FAIL:\n" + "\n".join(failures))
    print("OK")


if __name__ == "__main__":
    main()
