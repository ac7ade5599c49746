#!/usr/bin/env python3
"""Write the delta corpora of issue 31 to DIR (deterministic from SEED):

    bench/delta_corpora.py DIR [SEED] [--log-mb 50] [--csv-mb 20]

Pairs (old, new), each the version the other side holds and the one to send:
  log.old / log.new    a log (bench/genlog.py) and the same log with 1 MB appended
  csv.old / csv.new    a CSV of ids, timestamps, names, floats; 1% of its rows
                       edited in place and 1% inserted at random places
  prog.old / prog.new  a C program of several MB (gcc -O1) rebuilt after a
                       one-line change in a function near the middle (the code
                       after it moves, so addresses shift as in a real rebuild)
"""
import argparse, os, random, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("seed", nargs="?", type=int, default=31)
ap.add_argument("--log-mb", type=float, default=50)
ap.add_argument("--csv-mb", type=float, default=20)
ap.add_argument("--prog-funcs", type=int, default=12000)
args = ap.parse_args()
os.makedirs(args.dir, exist_ok=True)
d = lambda name: os.path.join(args.dir, name)
MB = 1_000_000

# (a) The log: genlog is deterministic, so a longer run starts with the shorter one.
old_size = int(args.log_mb * MB)
subprocess.run([sys.executable, os.path.join(HERE, "genlog.py"), d("log.new"),
                str(old_size + MB)], check=True)
with open(d("log.new"), "rb") as f, open(d("log.old"), "wb") as g:
    g.write(f.read(old_size))

# (b) The CSV.
rng = random.Random(args.seed)
first = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Dennis", "Margaret", "Alan", "Edsger",
         "Frances", "Donald", "Radia", "Leslie", "Niklaus", "Sophie", "Tim", "Anita", "John"]
last = ["Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson", "Ritchie", "Hamilton", "Turing",
        "Dijkstra", "Allen", "Knuth", "Perlman", "Lamport", "Wirth", "Wilson", "Berners-Lee"]
cities = ["Paris", "Lyon", "Berlin", "Madrid", "Lisbon", "Oslo", "Turin", "Ghent", "Porto", "Brno"]


def row(i):
    ts = 1714564800 + i * 7 + rng.randrange(7)
    return "%d,%d,%s %s,%s,%.4f,%.2f,%d,%s\n" % (
        i, ts, rng.choice(first), rng.choice(last), rng.choice(cities),
        rng.uniform(-90, 90), rng.lognormvariate(3, 1.2), rng.randrange(0, 1000),
        "%016x" % rng.getrandbits(64))


rows = ["id,timestamp,name,city,lat,amount,qty,ref\n"]
size = len(rows[0])
i = 0
while size < args.csv_mb * MB:
    r = row(i)
    rows.append(r)
    size += len(r)
    i += 1
with open(d("csv.old"), "w") as f:
    f.writelines(rows)
n = len(rows) - 1
for k in rng.sample(range(1, n + 1), n // 100):  # 1% edited in place
    parts = rows[k].rstrip("\n").split(",")
    parts[5] = "%.2f" % rng.lognormvariate(3, 1.2)
    parts[6] = str(rng.randrange(0, 1000))
    rows[k] = ",".join(parts) + "\n"
inserts = sorted(rng.sample(range(1, n + 1), n // 100), reverse=True)  # 1% inserted
for j, k in enumerate(inserts):
    rows.insert(k, row(n + 1 + j))
with open(d("csv.new"), "w") as f:
    f.writelines(rows)

# (c) The program: many functions with varied bodies and string tables, built
# twice with one line changed near the middle.
def program(changed):
    r = random.Random(args.seed + 1)
    out = ["#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n"]
    nf = args.prog_funcs
    for k in range(nf):
        a, b, c = r.randrange(1, 1000), r.randrange(1, 1000), r.randrange(2, 31)
        extra = ""
        if changed and k == nf // 2:
            extra = "    if (x == %d) fprintf(stderr, \"edge case %%ld\\n\", x);\n" % (a * b)
        out.append(
            "long f%d(long x) {\n    static const char *msg = \"function %d: step %d of %d\";\n"
            "    long y = x * %d + %d;\n%s"
            "    for (int i = 0; i < %d; i++) y = (y << 1) ^ (y >> %d) ^ i;\n"
            "    if (y %% %d == 0) puts(msg);\n    return y + (long)strlen(msg);\n}\n"
            % (k, k, a, b, a, b, extra, c, c % 7 + 1, b))
    out.append("long (*table[])(long) = {%s};\n" % ",".join("f%d" % k for k in range(nf)))
    out.append("int main(int argc, char **argv) {\n    long s = 0;\n"
               "    for (int k = 0; k < %d; k++) s += table[k](argc + k);\n"
               "    printf(\"%%ld\\n\", s);\n    return 0;\n}\n" % nf)
    return "".join(out)


for name, changed in (("prog.old", False), ("prog.new", True)):
    src = d(name + ".c")
    with open(src, "w") as f:
        f.write(program(changed))
    subprocess.run(["gcc", "-O1", "-g0", "-o", d(name), src], check=True)
    os.remove(src)
for name in ("log.old", "log.new", "csv.old", "csv.new", "prog.old", "prog.new"):
    print("%-9s %10d bytes" % (name, os.path.getsize(d(name))))
