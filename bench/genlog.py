#!/usr/bin/env python3
"""Write SIZE bytes of log-like text (deterministic) to PATH: bench/genlog.py PATH SIZE"""
import random, sys

path, size = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
levels = ["INFO"] * 14 + ["DEBUG"] * 4 + ["WARN"] * 2 + ["ERROR"]
services = ["api", "auth", "billing", "worker", "scheduler", "gateway", "search", "mailer"]
methods = ["GET"] * 6 + ["POST"] * 3 + ["PUT", "DELETE"]
paths = ["/api/v1/users/{}", "/api/v1/orders/{}", "/api/v2/search?q=item{}", "/healthz",
         "/api/v1/invoices/{}/pdf", "/static/app.{}.js", "/api/v1/sessions", "/login"]
msgs = ["cache miss for key user:{}", "retrying upstream request attempt={}",
        "slow query took {}ms", "connection pool size={}", "job {} finished",
        "token refreshed for account {}", "rate limit reached for client {}"]
agents = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "curl/8.5.0",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) Safari/605.1.15", "python-requests/2.31"]
statuses = [200] * 20 + [201, 204, 301, 304, 400, 401, 403, 404, 404, 500, 502]
t = 1714564800.0
out = open(path, "w", buffering=1 << 20)
written = 0
chunk = []
while written < size:
    for _ in range(2000):
        t += rng.expovariate(200.0)
        sec = int(t)
        hh, mm, ss = (sec // 3600) % 24, (sec // 60) % 60, sec % 60
        ts = "2024-05-01T%02d:%02d:%02d.%03dZ" % (hh, mm, ss, int((t - sec) * 1000))
        lvl = rng.choice(levels)
        svc = rng.choice(services)
        pid = rng.randrange(1, 9)
        if rng.random() < 0.7:
            p = rng.choice(paths).format(rng.randrange(1, 100000))
            line = '%s %-5s [%s-%d] %s %s status=%d bytes=%d dur=%.1fms req_id=%08x ip=10.%d.%d.%d ua="%s"\n' % (
                ts, lvl, svc, pid, rng.choice(methods), p, rng.choice(statuses),
                rng.randrange(0, 60000), rng.expovariate(1 / 40.0), rng.getrandbits(32),
                rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.choice(agents))
        else:
            line = "%s %-5s [%s-%d] %s\n" % (ts, lvl, svc, pid,
                                            rng.choice(msgs).format(rng.randrange(1, 5000)))
        chunk.append(line)
    s = "".join(chunk)
    chunk.clear()
    if written + len(s) > size:
        s = s[: size - written]
    out.write(s)
    written += len(s)
out.close()
