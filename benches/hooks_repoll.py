# Re-poll cost with and without [hooks]: N sequential polls (timeout=0, the
# same held channel) over one keep-alive connection, against $COMETBOX_BIN
# (default target/debug/cometbox). Hooks point at an unreachable URL with
# on_error = "allow": the backend is down, and online clients must not notice.
#   python3 benches/hooks_repoll.py
import http.client, json, os, shutil, subprocess, sys, tempfile, time, hmac, hashlib, base64
BIN = os.environ.get("COMETBOX_BIN", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "debug", "cometbox"))
SECRET = "bench"
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def token(sub):
    h = b64(b'{"alg":"HS256","typ":"JWT"}'); p = b64(json.dumps({"sub": sub, "exp": int(time.time())+600, "channels": ["room"]}).encode())
    s = hmac.new(SECRET.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(s)}"
def run(hooks_url, n=3000):
    d = tempfile.mkdtemp(); ready = os.path.join(d, "r.json")
    env = {"PATH": os.environ["PATH"], "COMETBOX_PUBLIC__LISTEN": "127.0.0.1:0", "COMETBOX_INGEST__LISTEN": "127.0.0.1:0", "COMETBOX_AUTH__SECRET": SECRET, "COMETBOX_LOG__LEVEL": "warn"}
    if hooks_url: env.update({"COMETBOX_HOOKS__URL": hooks_url, "COMETBOX_HOOKS__SECRET": "x", "COMETBOX_HOOKS__ON_ERROR": "allow", "COMETBOX_HOOKS__TIMEOUT": "200ms"})
    p = subprocess.Popen([BIN, "--ready-file", ready], env=env, stderr=subprocess.DEVNULL)
    while not os.path.exists(ready): time.sleep(0.02)
    time.sleep(0.1)
    host, port = json.load(open(ready))["public"].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port)); t = token("bencher")
    def poll():
        c.request("GET", f"/poll?token={t}&timeout=0&channels=room"); r = c.getresponse(); r.read(); assert r.status == 200, r.status
    for _ in range(200): poll()
    start = time.perf_counter()
    for _ in range(n): poll()
    el = time.perf_counter() - start
    p.terminate(); p.wait(); shutil.rmtree(d, ignore_errors=True)
    return el / n * 1e6
for rnd in range(3):
    off = run(None); on = run("http://127.0.0.1:1/unreachable")
    print(f"round {rnd}: hooks off {off:.0f} us/poll, hooks on {on:.0f} us/poll")
