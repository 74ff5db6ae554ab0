#!/usr/bin/env python3
"""tools/bench's arithmetic: reads fio's JSON and writes the table.

  bench_report.py fio FIO.json RW
      prints "VALUE OPS": MB/s (1e6 bytes) for sequential jobs, IOPS for
      random ones; OPS, the I/Os the job completed.
  bench_report.py report RESULTS.tsv STATS_DIR HZ ROUNDS JSON|- PLOT|- OPTIONS QUICK [ROWS]
      the table on stdout (and the JSON and the plot); exit status 1 if any
      row lacks a figure on any side. ROWS: the rows run (comma-separated;
      default all). A side "uring" (tools/bench --transports: tmpfsd on the
      io_uring transport, "tmpfsd" then being /dev/fuse) adds its columns.
"""
import json
import os
import statistics
import sys

# Issue 30's table: what each row measures, its unit, and the target for
# tmpfsd / tmpfs (f's "8x slower" is a ratio of 1/8 of the entry rate).
ROWS = [
    ("a", "seq write 1M, fresh mount", "MB/s", 0.70),
    ("b1", "seq read 1M, cache dropped", "MB/s", 0.60),
    ("b2", "seq read 1M, warm", "MB/s", 0.95),
    ("c1", "rand read 4k buffered", "IOPS", 0.95),
    ("c2", "rand read 4k O_DIRECT", "IOPS", 0.20),
    ("d1", "rand write 4k buffered", "IOPS", 0.50),
    ("d2", "rand write 4k O_DIRECT", "IOPS", 0.15),
    ("e-create", "create", "files/s", 0.05),
    ("e-stat", "stat", "files/s", 0.30),
    ("e-unlink", "unlink", "files/s", 0.08),
    ("f-untar", "untar tree", "entries/s", 1 / 8),
    ("f-rm", "rm -rf tree", "entries/s", 1 / 8),
    # --beyond-memory: against kernel tmpfs with a swap file, both in a
    # memory cgroup smaller than the data.
    ("m-write", "beyond memory: seq write 1M", "MB/s", 1.0),
    ("m-read", "beyond memory: seq read 1M", "MB/s", 2.0),
    ("m-rand", "beyond memory: rand read 4k", "IOPS", 1.0),
]
# The target of the io_uring transport against /dev/fuse (issue 33), where
# the issue sets one.
URING_TARGET = {"c2": 1.5, "e-create": 1.5, "e-stat": 1.5, "e-unlink": 1.5}


def fio(path, rw):
    job = json.load(open(path))["jobs"][0]
    if job.get("error"):
        sys.exit(f"fio error {job['error']}")
    side = job["write" if "write" in rw else "read"]
    value = side["iops"] if rw.startswith("rand") else side["bw_bytes"] / 1e6
    print(f"{value:.1f} {side['total_ios']}")


def requests(path):
    """The requests_* counters of a `tmpfsctl stats --json` output, or None."""
    try:
        stats = json.load(open(path))["stats"]
    except (OSError, ValueError, KeyError):
        return None
    return {k[len("requests_"):]: v for k, v in stats.items() if k.startswith("requests_")}


def delta(after, before):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)
            if after.get(k, 0) != before.get(k, 0)}


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def report(results, stats_dir, hz, rounds, json_out, plot_out, options, quick, rows_run=""):
    hz, rounds = int(hz), int(rounds)
    wanted = set(rows_run.split(",")) if rows_run else None
    runs = {}  # (row, side) -> list of per-round dicts
    failures = []
    for line in open(results):
        row, side, rnd, status, value, ops, ticks, hwm = line.rstrip("\n").split("\t")
        if row == "-":
            failures.append(f"round {rnd}: {status}")
            continue
        run = {"round": int(rnd), "status": status}
        if status == "ok":
            run["value"] = float(value)
            run["ops"] = int(ops)
        if ticks != "-":
            run["cpu_s"] = int(ticks) / hz
        if hwm != "-":
            run["peak_rss_kib"] = int(hwm)
        if side != "tmpfs":
            sfx = ".uring" if side == "uring" else ""
            base = os.path.join(stats_dir, f"{row}.{rnd}{sfx}")
            before, after = requests(base + ".before.json"), requests(base + ".after.json")
            o0 = requests(os.path.join(stats_dir, f"overhead.{rnd}.0{sfx}.json"))
            o1 = requests(os.path.join(stats_dir, f"overhead.{rnd}.1{sfx}.json"))
            if before is not None and after is not None and o0 is not None and o1 is not None:
                own = delta(o1, o0)  # one tmpfsctl call's requests, taken off
                req = {k: v - own.get(k, 0) for k, v in delta(after, before).items()}
                run["requests"] = {k: v for k, v in req.items() if v}
        runs.setdefault((row, side), []).append(run)

    uring = any(side == "uring" for _, side in runs)
    sides = ("tmpfs", "tmpfsd", "uring") if uring else ("tmpfs", "tmpfsd")
    table = []
    for row, what, unit, target in ROWS:
        if wanted is not None and row not in wanted:
            continue
        entry = {"row": row, "what": what, "unit": unit, "target": target}
        problems = []
        for side in sides:
            mine = runs.get((row, side), [])
            ok = [r["value"] for r in mine if r["status"] == "ok"]
            entry[side] = statistics.median(ok) if ok else None
            entry[side + "_rounds"] = mine
            bad = [f"round {r['round']}: {r['status']}" for r in mine if r["status"] != "ok"]
            if len(mine) < rounds:
                bad.append(f"{rounds - len(mine)} round(s) not run")
            if bad:
                problems.append(f"{side} " + "; ".join(bad))
        entry["problems"] = problems
        a, b = entry["tmpfs"], entry["tmpfsd"]
        entry["ratio"] = b / a if a and b else None
        if uring:
            u = entry["uring"]
            entry["uring_ratio"] = u / a if a and u else None
            entry["uring_vs_dev"] = u / b if b and u else None
            entry["uring_target"] = URING_TARGET.get(row)
            du = [r for r in entry["uring_rounds"] if r["status"] == "ok"]
            cpu = [r["cpu_s"] for r in du if "cpu_s" in r]
            entry["uring_cpu_s"] = statistics.median(cpu) if cpu else None
        d = [r for r in entry["tmpfsd_rounds"] if r["status"] == "ok"]
        cpu = [r["cpu_s"] for r in d if "cpu_s" in r]
        entry["cpu_s"] = statistics.median(cpu) if cpu else None
        rss = [r["peak_rss_kib"] for r in d if "peak_rss_kib" in r]
        entry["peak_rss_mib"] = max(rss) / 1024 if rss else None
        per_op = [{k: v / r["ops"] for k, v in r["requests"].items()} for r in d if "requests" in r and r["ops"]]
        if per_op:
            keys = set().union(*per_op)
            entry["requests_per_op"] = {k: statistics.median([p.get(k, 0) for p in per_op]) for k in keys}
        else:
            entry["requests_per_op"] = None
        table.append(entry)

    head = f"{'row':<9} {'figure':<27} {'unit':<9} {'tmpfs':>11} {'tmpfsd':>11} {'ratio':>7} {'target':>6} " \
           f"{'met':>3} {'CPU s':>6} {'RSS MiB':>7}"
    if uring:
        head += f" {'uring':>11} {'u/tmpfs':>7} {'u/dev':>6} {'target':>6} {'met':>3} {'u CPU s':>7}"
    head += "  FUSE requests / op"
    print(f"median of {rounds} round(s); ratio = tmpfsd / tmpfs (1.0: as fast as the kernel); "
          f"CPU, RSS, requests: the daemon's, during the row")
    if uring:
        print("tmpfsd: --transport dev (/dev/fuse); uring: --transport uring (io_uring rings); "
              "u/dev = uring / tmpfsd")
    print(head)
    failed = bool(failures)
    for e in table:
        rpo = e["requests_per_op"]
        if rpo is None:
            req = "-"
        else:
            total = sum(rpo.values())
            top = sorted(((v, k) for k, v in rpo.items() if v >= 0.005), reverse=True)[:3]
            req = f"{total:.3g}" + (" (" + ", ".join(f"{k} {v:.3g}" for v, k in top) + ")" if top else "")
        a = fmt(e["tmpfs"]) if e["tmpfs"] is not None else "FAILED"
        b = fmt(e["tmpfsd"]) if e["tmpfsd"] is not None else "FAILED"
        ratio = f"{e['ratio']:.3f}" if e["ratio"] is not None else "-"
        met = ("yes" if e["ratio"] >= e["target"] else "no") if e["ratio"] is not None else "-"
        cpu = f"{e['cpu_s']:.2f}" if e["cpu_s"] is not None else "-"
        rss = f"{e['peak_rss_mib']:.0f}" if e["peak_rss_mib"] is not None else "-"
        line = f"{e['row']:<9} {e['what']:<27} {e['unit']:<9} {a:>11} {b:>11} {ratio:>7} {e['target']:>6.3g} " \
               f"{met:>3} {cpu:>6} {rss:>7}"
        if uring:
            u = fmt(e["uring"]) if e["uring"] is not None else "FAILED"
            ur = f"{e['uring_ratio']:.3f}" if e["uring_ratio"] is not None else "-"
            ud = f"{e['uring_vs_dev']:.2f}" if e["uring_vs_dev"] is not None else "-"
            ut = e["uring_target"]
            utt = f"{ut:.3g}" if ut else "-"
            umet = ("yes" if e["uring_vs_dev"] >= ut else "no") if ut and e["uring_vs_dev"] else "-"
            ucpu = f"{e['uring_cpu_s']:.2f}" if e["uring_cpu_s"] is not None else "-"
            line += f" {u:>11} {ur:>7} {ud:>6} {utt:>6} {umet:>3} {ucpu:>7}"
        print(f"{line}  {req}")
        if e["problems"]:
            failed = True
            for p in e["problems"]:
                print(f"{'':<9} FAILED: {p}")
    for f in failures:
        print(f"FAILED: {f}")
    print(f"(f: {'/usr/include/linux' if quick == '1' else '/usr/include'}; target 0.125 = 8x slower. "
          f"Daemon options: {options.strip() or 'defaults'})")

    if json_out != "-":
        with open(json_out, "w") as out:
            json.dump({"rounds": rounds, "quick": quick == "1", "options": options.strip(),
                       "failures": failures, "rows": table}, out, indent=1)
    if plot_out != "-":
        plot(table, plot_out, rounds)
    if failed:
        print("bench: some rows failed (see above)", file=sys.stderr)
    return 1 if failed else 0


def plot(table, path, rounds):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = range(len(table))
    ratios = [e["ratio"] or 0 for e in table]
    colors = ["tab:green" if e["ratio"] and e["ratio"] >= e["target"] else "tab:red" for e in table]
    ax.bar(xs, ratios, color=colors, width=0.6, label="tmpfsd / tmpfs")
    ax.scatter(xs, [e["target"] for e in table], marker="_", s=900, color="black", linewidths=2,
               label="target", zorder=3)
    for x, e in zip(xs, table):
        if e["ratio"] is None:
            ax.text(x, 0.012, "FAILED", rotation=90, ha="center", va="bottom", color="tab:red")
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylim(0.01, 2)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([e["row"] for e in table], rotation=30, ha="right")
    ax.set_ylabel("tmpfsd / kernel tmpfs (log)")
    ax.set_title(f"tools/bench: tmpfsd against kernel tmpfs, median of {rounds} round(s); 1.0 = as fast")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    if sys.argv[1] == "fio":
        fio(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "report":
        sys.exit(report(*sys.argv[2:11]))
    else:
        sys.exit(__doc__)
