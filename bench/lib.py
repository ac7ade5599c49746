#!/usr/bin/env python3
"""Helpers for bench/run (standard library only, Linux).

  lib.py firstmsg --inbox DIR --transcripts DIR [--stop-after-data] [--timeout S] -- CMD...
      Start CMD and report, in ms from just before it was started: when the
      first message file appeared in the agent's inbox (inotify), when the
      first message and the first data message (>= 64 KiB) were delivered
      according to the sender's transcript. One JSON object on stdout.

  lib.py transcript FILE --t0 UNIX --max-message N --msgs-per-min M --bytes-per-min B [--text]
      Achieved pace of one sender from its transcript. One JSON object.

  lib.py rss FILE              peak RSS in KiB from a `/usr/bin/time -v` report.
  lib.py median X...           median of numbers.
  lib.py report RESULTS.jsonl  the markdown report (stdout).
"""
import base64
import ctypes
import json
import os
import select
import signal
import statistics
import struct
import subprocess
import sys
import time

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
DATA_MIN = 64 * 1024


# ---------------------------------------------------------------- firstmsg

def read_transcript_lines(path, pos):
    """New complete lines of a transcript from byte offset pos."""
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except OSError:
        return [], pos
    end = data.rfind(b"\n")
    if end < 0:
        return [], pos
    lines = data[: end + 1].splitlines()
    return lines, pos + end + 1


def firstmsg(argv):
    inbox = tdir = None
    stop_after_data = False
    timeout = 30.0
    data_min = DATA_MIN
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--inbox":
            inbox = argv[i + 1]; i += 2
        elif a == "--transcripts":
            tdir = argv[i + 1]; i += 2
        elif a == "--stop-after-data":
            stop_after_data = True; i += 1
        elif a == "--timeout":
            timeout = float(argv[i + 1]); i += 2
        elif a == "--data-min":
            data_min = int(argv[i + 1]); i += 2
        elif a == "--":
            cmd = argv[i + 1:]; break
        else:
            sys.exit(f"firstmsg: unknown argument {a}")
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        sys.exit("inotify_init1 failed")
    if libc.inotify_add_watch(fd, inbox.encode(), IN_CREATE | IN_MOVED_TO) < 0:
        sys.exit(f"inotify_add_watch {inbox} failed")
    before = set(os.listdir(tdir)) if os.path.isdir(tdir) else set()
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_seen = None
    first_tx = first_data = None
    tlog = None
    pos = 0
    deadline = t0 + timeout
    while time.time() < deadline:
        if first_seen is None:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                buf = os.read(fd, 65536)
                now = time.time()
                off = 0
                while off < len(buf):
                    _wd, _mask, _cookie, ln = struct.unpack_from("iIII", buf, off)
                    name = buf[off + 16: off + 16 + ln].rstrip(b"\0").decode()
                    off += 16 + ln
                    if name.endswith(".msg") and not name.startswith("."):
                        first_seen = now
                        break
        else:
            time.sleep(0.005)
        if tlog is None and os.path.isdir(tdir):
            new = [n for n in os.listdir(tdir) if n.endswith(".log") and n not in before]
            if new:
                tlog = os.path.join(tdir, new[0])
        if tlog is not None and first_data is None:
            lines, pos = read_transcript_lines(tlog, pos)
            for line in lines:
                ts, hx = line.split(b" ", 1)
                t = int(ts) / 1e6
                if first_tx is None:
                    first_tx = t
                if len(hx.strip()) // 2 >= data_min:
                    first_data = t
                    break
        done = proc.poll() is not None
        if first_seen is not None and first_data is not None:
            break
        if done and first_seen is not None:
            # Small file: the whole transfer may be under the data threshold.
            lines, pos = read_transcript_lines(tlog, pos) if tlog else ([], pos)
            for line in lines:
                ts, hx = line.split(b" ", 1)
                if first_tx is None:
                    first_tx = int(ts) / 1e6
            break
    status = "ok"
    if proc.poll() is None:
        if stop_after_data or time.time() >= deadline:
            proc.send_signal(signal.SIGTERM)
            status = "stopped"
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = "killed"
    t_end = time.time()
    ms = lambda t: None if t is None else round((t - t0) * 1000, 1)
    print(json.dumps({
        "first_seen_ms": ms(first_seen),
        "first_tx_ms": ms(first_tx),
        "first_data_ms": ms(first_data),
        "wall_ms": ms(t_end),
        "exit": proc.returncode,
        "status": status,
        "stderr": proc.stderr.read().decode(errors="replace")[-400:] if proc.stderr else "",
    }))


# -------------------------------------------------------------- transcript

def pace_stats(msgs, t0, max_msg, mpm, bpm):
    """Pace figures of messages [(time s, wire size, carried bytes)], as a
    share of the tighter of (max message x msgs/min) and the byte ceiling."""
    msgs = sorted(msgs)
    # The pace a sender may use: the tighter of messages x size and the byte ceiling.
    limits = []
    if mpm:
        limits.append(max_msg * mpm / 60.0)
    if bpm:
        limits.append(bpm / 60.0)
    pace = min(limits) if limits else None
    out = {"messages": len(msgs), "pace_bytes_s": pace, "max_message": max_msg,
           "msgs_per_min_limit": mpm, "bytes_per_min_limit": bpm}
    threshold = min(max_msg // 2, DATA_MIN)
    data_idx = [k for k, m in enumerate(msgs) if m[1] >= threshold]
    if len(data_idx) >= 2:
        first, last = msgs[data_idx[0]][0], msgs[-1][0]
        window = [m for m in msgs if first <= m[0] < last]
        span = last - first
        wire = sum(m[1] for m in window)
        carried = sum(m[2] for m in window)
        data_sizes = [msgs[k][1] for k in data_idx]
        out.update({
            "data_messages": len(data_idx),
            "data_window_s": round(span, 3),
            "data_bytes_s": round(wire / span, 1),
            "data_carried_bytes_s": round(carried / span, 1),
            "data_msgs_per_min": round(len(window) / span * 60, 2),
            "data_msg_mean": round(statistics.mean(data_sizes[:-1] or data_sizes), 1),
            "data_msg_max": max(data_sizes),
            "first_data_s": round(first - t0, 3),
            "pct_pace": round(100 * wire / span / pace, 1) if pace else None,
            "pct_msgs": round(100 * len(window) / span * 60 / mpm, 1) if mpm else None,
        })
        # The whole run, session start included: from the command's start
        # to the last message, counting every message before the last.
        whole = [m for m in msgs if m[0] < last]
        whole_span = last - t0
        out.update({
            "whole_window_s": round(whole_span, 3),
            "whole_bytes_s": round(sum(m[1] for m in whole) / whole_span, 1),
            "pct_pace_whole": round(100 * sum(m[1] for m in whole) / whole_span / pace, 1)
            if pace else None,
        })
    return out


def transcript(argv):
    path = argv[0]
    opts = {"--t0": None, "--t1": None, "--max-message": None, "--msgs-per-min": None,
            "--bytes-per-min": None}
    text = False
    i = 1
    while i < len(argv):
        if argv[i] == "--text":
            text = True; i += 1
        else:
            opts[argv[i]] = float(argv[i + 1]); i += 2
    t0 = opts["--t0"]
    max_msg = int(opts["--max-message"])
    mpm = opts["--msgs-per-min"]
    bpm = opts["--bytes-per-min"]
    msgs = []  # (time, wire bytes, raw bytes)
    with open(path, "rb") as f:
        for line in f:
            ts, hx = line.split(b" ", 1)
            raw = bytes.fromhex(hx.strip().decode())
            carried = len(raw)
            if text:
                try:
                    carried = len(base64.b64decode(raw))
                except Exception:
                    pass
            msgs.append((int(ts) / 1e6, len(raw), carried))
    print(json.dumps(pace_stats(msgs, t0, max_msg, mpm, bpm)))


def channel(argv):
    """Pace figures of one party's sends in an emulator's record (JSON).

    channel RECORD --who NAME --field bot|number|account --methods m1,m2
            --t0-ms T --max-message N --msgs-per-min M --bytes-per-min B
            [--text] [--b64-doc]
    """
    opts = {"--who": None, "--field": None, "--methods": None, "--t0-ms": "0",
            "--max-message": None, "--msgs-per-min": None, "--bytes-per-min": None}
    flags = set()
    i = 1
    while i < len(argv):
        if argv[i] in ("--text", "--b64-doc"):
            flags.add(argv[i]); i += 1
        else:
            opts[argv[i]] = argv[i + 1]; i += 2
    record = json.load(open(argv[0]))
    methods = opts["--methods"].split(",")
    msgs = []
    for r in record:
        if r.get(opts["--field"]) != opts["--who"] or r["method"] not in methods:
            continue
        if r["status"] not in (200, 201):
            continue
        size = r["size"]
        carried = size * 3 // 4 if ("--text" in flags or "--b64-doc" in flags) else size
        wire = carried if "--b64-doc" in flags else size
        msgs.append((r["at_ms"] / 1000.0, wire, carried))
    bpm = float(opts["--bytes-per-min"]) if opts["--bytes-per-min"] not in (None, "0") else None
    out = pace_stats(msgs, float(opts["--t0-ms"]) / 1000.0, int(opts["--max-message"]),
                     float(opts["--msgs-per-min"]), bpm)
    limited = [r for r in record if r.get(opts["--field"]) == opts["--who"]
               and (r["status"] == 429 or r.get("code") in (131056, 130429, 613))]
    out["rate_limited"] = len(limited)
    print(json.dumps(out))


# --------------------------------------------------------------------- misc

def rss(argv):
    for line in open(argv[0]):
        if "Maximum resident set size" in line:
            print(line.rsplit(":", 1)[1].strip())
            return
    print("")


def median(argv):
    print(statistics.median(float(x) for x in argv))


# ------------------------------------------------------------------- report

def fmt_table(header, rows, align=None):
    """A markdown table whose columns line up in a terminal too."""
    cols = len(header)
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(str(header[i])), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(cols)]
    align = align or ["l"] + ["r"] * (cols - 1)

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if align[i] == "r" else c.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(
        ("-" * (widths[i] + 1) + ":") if align[i] == "r" else ("-" * (widths[i] + 2))
        for i in range(cols)) + "|"
    return "\n".join([line([str(h) for h in header]), sep] + [line(r) for r in rows])


def mbs(nbytes, secs):
    return f"{nbytes / 1e6 / secs:,.0f} MB/s" if secs else "n/a"


def mib(kib):
    return f"{int(kib) / 1024:.1f} MiB"


def ok(flag):
    return "yes" if flag else "**NO**"


def report(argv):
    recs = [json.loads(l) for l in open(argv[0]) if l.strip()]
    by = {}
    for r in recs:
        by.setdefault(r["kind"], []).append(r)
    meta = by["meta"][0]
    out = []
    p = out.append
    p("## Benchmark")
    p("")
    p(f"Run `{meta['command']}` on {meta['date']} at commit `{meta['commit']}`.")
    p("")
    p(f"Machine: {meta['cpu']}, {meta['nproc']} CPUs (nproc), {meta['mem']} RAM, "
      f"Linux {meta['kernel']}, {meta['os']}; load average at start {meta['load_start']}, "
      f"at end {meta.get('load_end', '?')}.")
    p(f"Tools: {meta['rustc']}; {meta['sha256sum']}; {meta['gzip']}; age {meta['age']}; "
      f"{meta['rclone']}.")
    p(f"Settings: {meta['settings']}.")
    p("")
    targets = []

    # 1. pipeline
    pipe = by.get("pipeline", [])
    tools = by.get("tool", [])
    if pipe or tools:
        files = meta["files"]
        p(f"### 1. Pipeline throughput (one thread, file in page cache, best of {meta['reps']})")
        p("")
        p("MB = 10^6 bytes. In brackets: output size as a share of the input.")
        p("")
        rows = []
        label = {
            "seal": "pigeon chunk pipeline: SHA-256 + gzip-if-useful + XChaCha20-Poly1305",
            "full": "pigeon, plus the whole-file SHA-256 (same thread)",
        }
        for key in ("seal", "full"):
            row = [label[key]]
            for f in files:
                r = next((x for x in pipe if x["file"] == f), None)
                if r is None:
                    row.append("n/a"); continue
                secs = r[f"{key}_secs"]
                row.append(f"{mbs(r['bytes'], secs)} ({100 * r['sealed_bytes'] / r['bytes']:.1f}%)"
                           if key == "seal" else mbs(r["bytes"], secs))
            rows.append(row)
        for name in ("sha256sum", "gzip -1", "age -e (X25519)", "gzip -1 | age -e"):
            row = ["`" + name.replace("|", "\\|") + "`"]
            for f in files:
                r = next((x for x in tools if x["file"] == f and x["name"] == name), None)
                if r is None:
                    row.append("n/a"); continue
                s = mbs(r["bytes"], r["secs"])
                if r.get("out_bytes"):
                    s += f" ({100 * r['out_bytes'] / r['bytes']:.1f}%)"
                row.append(s)
            rows.append(row)
        p(fmt_table(["", *[meta["file_labels"][f] for f in files]], rows))
        p("")

    # 2. end to end
    e2e = by.get("e2e", [])
    if e2e:
        p(f"### 2. {meta['size_label']} upload end to end, local spool, `unlimited` profile (median of {meta['reps']})")
        p("")
        p("Wall time from the command's start to its exit (agent already running), "
          "against `rclone copy` of the same file to a `crypt` remote over a `local` remote.")
        p("")
        files = [f for f in meta["files"] if any(r["file"] == f for r in e2e)]
        rows = []
        get = lambda tool, f: next((r for r in e2e if r["tool"] == tool and r["file"] == f), None)
        row = ["`pigeon upload` (wall)"]
        for f in files:
            r = get("pigeon", f)
            row.append(f"{r['wall_s']:.2f} s ({mbs(r['bytes'], r['wall_s'])})" if r else "n/a")
        rows.append(row)
        row = ["`pigeon upload` (`elapsed_ms`)"]
        for f in files:
            r = get("pigeon", f)
            row.append(f"{r['elapsed_ms'] / 1000:.2f} s ({mbs(r['bytes'], r['elapsed_ms'] / 1000)})" if r else "n/a")
        rows.append(row)
        row = ["`rclone copy` to crypt remote (wall)"]
        for f in files:
            r = get("rclone", f)
            row.append(f"{r['wall_s']:.2f} s ({mbs(r['bytes'], r['wall_s'])})" if r else "n/a")
        rows.append(row)
        row = ["pigeon / rclone (wall; target <= 1.00)"]
        for f in files:
            a, b = get("pigeon", f), get("rclone", f)
            if a and b:
                ratio = a["wall_s"] / b["wall_s"]
                row.append(f"{ratio:.2f} {'' if ratio <= 1 else '**slower**'}".strip())
                targets.append((f"{meta['size_label']} upload ({meta['file_labels'][f]}) no slower than rclone crypt",
                                f"{a['wall_s']:.2f} s vs {b['wall_s']:.2f} s", ratio <= 1.0))
            else:
                row.append("n/a")
        rows.append(row)
        p(fmt_table(["", *[meta["file_labels"][f] for f in files]], rows))
        runs = [r for r in e2e if r.get("runs")]
        if runs:
            p("")
            p("Every run (s): " + "; ".join(
                f"{r['tool']} {meta['file_labels'][r['file']]}: "
                + ", ".join(f"{x:.2f}" for x in r["runs"]) for r in runs) + ".")
        p("")

    # 3. rss
    rss_ = by.get("rss", [])
    if rss_:
        r = rss_[0]
        big = (f"{r['bytes'] / 2**30:g} GiB" if r["bytes"] >= 2**30 else f"{r['bytes'] / 2**20:.0f} MiB")
        p(f"### 3. Peak memory, {big} upload (`unlimited`, `/usr/bin/time -v`)")
        p("")
        rows = []
        for r in rss_:
            diag = bool(r.get("env"))
            for who in ("client", "agent"):
                kib = r.get(f"{who}_kib")
                good = kib is not None and int(kib) < 64 * 1024
                name = f"`pigeon {'upload' if who == 'client' else 'agent'}`"
                if diag:
                    rows.append([f"{name}, diagnostic: `{r['env']}`", mib(kib) if kib else "n/a", "", ""])
                else:
                    rows.append([name, mib(kib) if kib else "n/a", "< 64 MiB", ok(good)])
                    targets.append((f"peak RSS of the {who}, {big} upload", mib(kib) if kib else "n/a", good))
        p(fmt_table(["process", "peak RSS", "target", "met"], rows))
        p("")
        r = rss_[0]
        p(f"The upload took {r['wall_s']:.1f} s wall ({mbs(r['bytes'], r['wall_s'])}), "
          f"`elapsed_ms` {r['elapsed_ms']}; status {r['status']}."
          + (" The diagnostic run sets glibc's mmap threshold so that freed large buffers go "
             "back to the kernel at once: what is left is what the process really holds."
             if len(rss_) > 1 else ""))
        p("")

    # 4. first message
    fm = by.get("first", [])
    if fm:
        p(f"### 4. Time to the first message on the spool (`unlimited`, agent idle; median of {meta['reps']}, max in brackets)")
        p("")
        p("From just before `pigeon upload` is started: the first message file appearing "
          "in the agent's inbox (inotify; it is the handshake), and the first data message "
          "(>= 64 KiB, from the sender's transcript).")
        p("")
        rows = []
        for r in fm:
            def cell(key):
                xs = [x for x in r[key] if x is not None]
                if not xs:
                    return "n/a"
                return f"{statistics.median(xs):.1f} ms ({max(xs):.1f})"
            met = all(x is not None and x < 100 for x in r["first_seen_ms"])
            rows.append([r["label"], cell("first_seen_ms"), cell("first_data_ms"), cell("wall_ms"),
                         "< 100 ms", ok(met)])
            targets.append((f"first message within 100 ms ({r['label']})",
                            cell("first_seen_ms"), met))
        p(fmt_table(["file", "first message", "first data message", "command exit / stopped",
                     "target", "met"], rows))
        p("")

    # 5. profiles
    prof = by.get("profile", [])
    if prof:
        p("### 5. Achieved pace under paced profiles (share of the profile's limit)")
        p("")
        p("From the client's transcript (what the provider saw). The data phase runs from the "
          "first data message to the last message; every message in it counts, control "
          "messages included. Pace = the tighter of (message limit x messages per minute) and "
          "the byte ceiling.")
        p("")
        rows = []
        for r in prof:
            unit = "chars" if r["text"] else "B"
            pace = r["pace_bytes_s"]
            if "data_bytes_s" not in r:
                rows.append([f"`{r['profile']}`", "n/a"] + [""] * 7)
                targets.append((f"{r['profile']} at >= 90% of pace", "no data", False))
                continue
            lim = (f"{int(r['msgs_per_min_limit'])} msg/min x {r['max_message']:,} {unit}"
                   + (f", {int(r['bytes_per_min_limit']):,} B/min" if r['bytes_per_min_limit'] else ""))
            rows.append([
                f"`{r['profile']}`", lim, f"{pace:,.0f} {unit}/s",
                f"{r['run_s']:.0f} s, {r['messages']} msgs",
                f"{r['data_msgs_per_min']:.1f}",
                f"{r['data_msg_mean']:,.0f} {unit}",
                f"{r['data_bytes_s']:,.0f} {unit}/s",
                f"**{r['pct_pace']:.1f}%**",
                f"{r['pct_pace_whole']:.1f}%",
            ])
            targets.append((f"{r['profile']} at >= 90% of pace", f"{r['pct_pace']:.1f}%",
                            r["pct_pace"] >= 90))
        p(fmt_table(["profile", "limit", "pace", "run", "msgs/min", "mean data msg",
                     "achieved", "% of pace", "% incl. session start"], rows))
        p("")
        for r in prof:
            if "data_carried_bytes_s" in r and r["text"]:
                p(f"`{r['profile']}` carries {r['data_carried_bytes_s']:,.0f} raw bytes/s "
                  f"inside its base64 text; the first data message left "
                  f"{r['first_data_s']:.2f} s after the command started.")
            elif "first_data_s" in r:
                p(f"`{r['profile']}`: the first data message left {r['first_data_s']:.2f} s "
                  f"after the command started.")
        p("")

    # 6. real channels
    chans = by.get("channel", [])
    if chans:
        p("### 6. Through the platforms' emulators at their real limits (all at once)")
        p("")
        p("Each platform's transport (the shipped client code) against `pigeon-emulator` with "
          "the platform's own pacing: Telegram one message a second per chat (20 documents a "
          "minute), WhatsApp one message every 6 s to a user (burst 1), Shipper 1000 posts a "
          "minute; the messaging channels' 10 MB/min byte ceiling on top. From the emulator's "
          "record of the client's successful sends; the data phase runs from the first data "
          "message to the last.")
        p("")
        rows = []
        for r in chans:
            if "data_bytes_s" not in r:
                rows.append([f"`{r['channel']}`", "n/a"] + [""] * 5)
                targets.append((f"{r['channel']} at >= 95% of pace", "no data", False))
                continue
            unit = "chars" if r["text"] else "B"
            rows.append([
                f"`{r['channel']}`", f"{r['pace_bytes_s']:,.0f} {unit}/s",
                f"{r['run_s']:.0f} s, {r['messages']} msgs",
                f"{r['data_bytes_s']:,.0f} {unit}/s",
                f"**{r['pct_pace']:.1f}%**",
                f"{r['first_data_s']:.2f} s",
                f"{r.get('rate_limited', 0)}",
            ])
            targets.append((f"{r['channel']} at >= 95% of pace", f"{r['pct_pace']:.1f}%",
                            r["pct_pace"] >= 95))
            targets.append((f"{r['channel']}: first data message < 5 s", f"{r['first_data_s']:.2f} s",
                            r["first_data_s"] < 5))
        p(fmt_table(["channel", "pace", "run", "achieved", "% of pace", "first data message",
                     "429s met"], rows))
        p("")

    # 7. HTTP overhead
    over = by.get("overhead", [])
    if over:
        p("### 7. The HTTP layer's cost per message")
        p("")
        p("Sequential sends to the emulator on 127.0.0.1, pacing off: pigeon's transport "
          "(serialisation, signing, error classification) next to a bare `reqwest` POST of the "
          "same body to the same server (for Shipper the bare POST is unsigned and refused "
          "after its body is read: the same bytes move, without pigeon's SHA-256 and HMAC).")
        p("")
        rows = [[r["platform"], f"{r['message_size']:,} B", str(r["messages"]),
                 f"{r['pigeon']['mean_ms']:.3f} ms", f"{r['bare']['mean_ms']:.3f} ms",
                 f"**{r['overhead_ms']:.3f} ms**", f"{r['pigeon']['p99_ms']:.3f} ms"] for r in over]
        p(fmt_table(["platform", "message", "sends", "pigeon mean", "bare POST mean",
                     "overhead", "pigeon p99"], rows))
        p("")

    # 8. log text on paced channels
    lt = by.get("logtext", [])
    if lt:
        p("### 8. Log text on paced channels")
        p("")
        p("One upload of log text (`bench/genlog.py`) or random data, elapsed time from "
          "`--json`: the bytes of file one minute of the channel carries, against what the "
          "channel itself carries raw in a minute (compression, chunk size, gzip level and, "
          "on a text channel, the alphabet decide it). A text channel's raw pace is its "
          "messages in base64 (telegram-text: 60 of 3072 bytes), for both alphabets, so the "
          "ratios compare: the dense alphabet spells 2.5x as many bytes in a message.")
        p("")
        rows = []
        # bytes a minute by (channel, alphabet, content)
        rate = {}
        for r in lt:
            secs = r["elapsed_ms"] / 1000.0
            per_min = r["bytes"] / secs * 60.0
            times = per_min / r["raw_per_min"]
            alphabet = r.get("alphabet", "-")
            content = r.get("content", "log")
            rate[(r["channel"], alphabet, content)] = per_min
            rows.append([r["channel"], alphabet, content, f"{r['bytes']:,} B", f"{secs:.1f} s",
                         f"{per_min / 1e6:.2f} MB/min", f"{r['raw_per_min'] / 1e6:.2f} MB/min",
                         f"**{times:.1f}x**"])
            if "doc" in r["channel"] and content == "log":
                targets.append((f"{r['channel']}: log text at >= 5x the raw pace",
                                f"{times:.1f}x", times >= 5))
            if r["channel"] == "telegram-text" and content == "log" and alphabet in ("base64", "dense"):
                want = {"base64": 4.5, "dense": 10}[alphabet]
                targets.append((f"telegram-text ({alphabet}): log text at >= {want}x the raw pace",
                                f"{times:.1f}x", times >= want))
        b64 = rate.get(("telegram-text", "base64", "random"))
        dense = rate.get(("telegram-text", "dense", "random"))
        if b64 and dense:
            targets.append(("telegram-text: random data dense at >= 2.3x base64's bytes a minute",
                            f"{dense / b64:.2f}x", dense / b64 >= 2.3))
        p(fmt_table(["channel", "alphabet", "content", "file", "took", "file bytes a minute",
                     "channel raw", "ratio"], rows, ["l", "l", "l", "r", "r", "r", "r", "r"]))
        p("")

    dl = by.get("delta", [])
    if dl:
        p("### 9. Deltas")
        p("")
        p("Bytes on the wire (the spool's transcripts: every message each side sent, "
          "handshakes and acknowledgements included) for the corpora of "
          "`bench/delta_corpora.py` (seed 31): the old version uploaded whole, the new one "
          "uploaded again (a delta against the old), the new one whole (`--no-delta`), and "
          "the new one downloaded onto a local copy of the old (a delta, the signature in the "
          "fetch). Beside it, rsync 3 on the same pair (`--no-whole-file -z --stats` through a "
          "stand-in remote shell, so that `-z` applies): literal and matched data, and the "
          "bytes each way.")
        p("")
        rows = []
        names = {"log": "(a) log, 1 MB appended", "csv": "(b) CSV, 1% edited + 1% inserted",
                 "prog": "(c) C program, one line added"}
        for r in dl:
            whole = r["whole_new"]
            pct = lambda n: f"{100.0 * n / whole:.1f}%"
            rows.append([names.get(r["corpus"], r["corpus"]), f"{r['size']:,}", f"{whole:,}",
                         f"{r['delta_up']:,} ({pct(r['delta_up'])})",
                         f"{r['delta_down'] + r['fetch_up']:,} ({pct(r['delta_down'] + r['fetch_up'])})",
                         f"{r['rs_up_sent'] + r['rs_up_received']:,} ({pct(r['rs_up_sent'] + r['rs_up_received'])})",
                         f"{r['rs_literal']:,} / {r['rs_matched']:,}"])
            if r["corpus"] == "log":
                targets.append(("(a) appended log: <= 1.05 MB on the wire each way",
                                f"{r['delta_up'] / 1e6:.2f} / {(r['delta_down'] + r['fetch_up']) / 1e6:.2f} MB",
                                r["delta_up"] <= 1.05e6 and r["delta_down"] + r["fetch_up"] <= 1.05e6))
            if r["corpus"] == "csv":
                targets.append(("(b) CSV: delta upload <= 5% of the whole", pct(r["delta_up"]),
                                r["delta_up"] <= 0.05 * whole))
            if r["corpus"] == "prog":
                rs = r["rs_up_sent"] + r["rs_up_received"]
                targets.append(("(c) program: delta upload <= 30% of the whole, and <= rsync",
                                f"{pct(r['delta_up'])}, rsync {rs:,}",
                                r["delta_up"] <= 0.3 * whole and r["delta_up"] <= rs))
        p(fmt_table(["corpus", "file", "whole upload", "delta upload", "delta download",
                     "rsync up (sent + received)", "rsync literal / matched"], rows,
                    ["l", "r", "r", "r", "r", "r", "r"]))
        p("")
        for r in by.get("delta_time", []):
            p(f"A delta upload of a {r['size'] / 1e6:.0f} MB log with 1 MB appended, "
              f"end to end over `shipper` (the delta made, sent, the file rebuilt and "
              f"verified on the agent): {r['secs']:.2f} s; the whole file: {r['whole_secs']:.2f} s.")
            targets.append((f"a delta of {r['size'] / 1e6:.0f} MB made and sent in <= 2 s",
                            f"{r['secs']:.2f} s", r["secs"] <= 2.0))
            p("")

    if targets:
        p("### Targets")
        p("")
        p(fmt_table(["target", "measured", "met"], [[t, m, ok(g)] for t, m, g in targets],
                    ["l", "r", "l"]))
        p("")
    t = by.get("timing", [])
    if t:
        p(f"Benchmark time: {t[0]['bench_s']:.0f} s (plus {t[0]['build_s']:.1f} s checking or running the release build).")
    print("\n".join(out))


def wirebytes(argv):
    """Bytes one party has sent so far: its transcript's messages, summed.
    `wirebytes DIR --not NAME`: every transcript in DIR but NAME.log."""
    path = argv[0]
    if os.path.isdir(path):
        skip = argv[argv.index("--not") + 1] + ".log" if "--not" in argv else None
        paths = [os.path.join(path, n) for n in sorted(os.listdir(path)) if n != skip]
    else:
        paths = [path]
    total = 0
    for p in paths:
        try:
            with open(p, "rb") as f:
                for line in f:
                    parts = line.split(b" ", 1)
                    if len(parts) == 2 and line.endswith(b"\n"):
                        total += len(parts[1].strip()) // 2
        except OSError:
            pass
    print(total)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"firstmsg": firstmsg, "transcript": transcript, "channel": channel, "rss": rss,
     "median": median, "report": report, "wirebytes": wirebytes}[cmd](args)
