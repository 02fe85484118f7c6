"""Load driver for `owlet serve` (BENCHMARKS.md): N streamed requests about one image, C at a time.

    owlet serve -m MODEL -t 2 --slots 2 --port 0 &          # prints its address
    python3 scripts/serve_load.py http://127.0.0.1:PORT photo.jpg 5 2 8

The first request goes alone (a new image: vision tower, abstractor, full prefill); the other
N-1 ask different questions about the same image (embedding-cache hits; a slot that already
holds the image reuses its KV cache). Prints time to first token, requests per minute and
tokens per second, and how many prompt positions came from a slot's KV cache
(usage.prompt_tokens_details.cached_tokens). Standard library only.
"""
import base64, json, sys, threading, time, urllib.request

url, image, n, conc, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
data = "data:image/jpeg;base64," + base64.b64encode(open(image, "rb").read()).decode()

def one(i, out):
    body = json.dumps({"model": "owlet", "stream": True, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": [
                           {"type": "image_url", "image_url": {"url": data}},
                           {"type": "text", "text": "Question %d: what is in this picture?" % i}]}]}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    t0 = time.time(); first = None; toks = 0; cached = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ch = json.loads(line[6:])
            if ch.get("usage"):
                cached = ch["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)
                # Tokens, not chunks: a token whose text is held back or empty sends none.
                toks = ch["usage"]["completion_tokens"]
            if ch.get("choices") and ch["choices"][0]["delta"].get("content"):
                toks += 1
                if first is None:
                    first = time.time() - t0
    out[i] = (first, toks, time.time() - t0, cached)

# The first request alone (new image: vision tower + abstractor), then the rest C at a time.
res = {}
one(0, res)
t0 = time.time()
sem = threading.Semaphore(conc)
def run(i):
    with sem:
        one(i, res)
ths = [threading.Thread(target=run, args=(i,)) for i in range(1, n)]
[t.start() for t in ths]; [t.join() for t in ths]
wall = time.time() - t0
f0 = res[0]
rest = [res[i] for i in range(1, n)]
print("first request: ttft %.1f ms, %d tokens in %.1f ms, %d cached positions" % (f0[0] * 1e3, f0[1], f0[2] * 1e3, f0[3]))
print("next %d requests, %d at a time: %.1f requests/min, ttft median %.1f ms (cached image), "
      "%.2f tokens/s per request, %.2f tokens/s in all, cached positions median %d"
      % (n - 1, conc, (n - 1) / wall * 60, sorted(r[0] for r in rest)[len(rest) // 2] * 1e3,
         sum(r[1] / (r[2] - r[0]) for r in rest) / len(rest), sum(r[1] for r in rest) / wall,
         sorted(r[3] for r in rest)[len(rest) // 2]))
