#!/usr/bin/env python3
"""SVG charts of the benchmark results, written with the standard library only.

    python3 benches/charts.py shootout RESULTS.json OUT_PREFIX
        OUT_PREFIX-throughput.svg and OUT_PREFIX-rss.svg: per workload (rows)
        and thread count (panels), each allocator's throughput relative to
        the fastest, and its peak RSS relative to the smallest.
    python3 benches/charts.py micro SUMMARY.json OUT.svg
        per micro-benchmark, each allocator's median time relative to the
        fastest (the table `cargo bench ... --bench peers` prints).
    python3 benches/charts.py markdown BENCHMARKS.md OUT_DIR
        all three, drawn from the micro-benchmark and shoot-out tables of a
        markdown page as those commands print them: OUT_DIR/micro.svg,
        OUT_DIR/shootout-throughput.svg, OUT_DIR/shootout-rss.svg (the
        charts BENCHMARKS.md shows: `... markdown BENCHMARKS.md benches/svg`).

shootout.py --json writes both shoot-out charts next to its JSON, and the
peers benchmark writes its chart next to criterion's results; this command
redraws them from saved results. Bars carry the absolute value as a label;
the bar length is the ratio, because workloads count different operations.
"""
import json
import os
import sys
from xml.sax.saxutils import escape

# One colour per allocator, rseqalloc first and darkest; others in order met.
PALETTE = ["#1b5e20", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]
FONT = 'font-family="sans-serif" font-size="11"'
TITLE_FONT = 'font-family="sans-serif" font-size="14" font-weight="bold"'


SI = (("G", 1e9), ("M", 1e6), ("k", 1e3))


def si(x):
    """A rate or count in three digits with a k/M/G suffix (shootout.py's cells)."""
    for unit, scale in SI:
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def unsi(text):
    """The inverse of si()."""
    for unit, scale in SI:
        if text.endswith(unit):
            return float(text[:-1]) * scale
    return float(text)


def unmib(text):
    """KiB from shootout.py's RSS cells ("5.9M" is MiB, "2.10G" GiB)."""
    return float(text[:-1]) * (1024 * 1024 if text.endswith("G") else 1024)


def colours(names):
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def bar_chart(title, note, panels, names, fmt, better, cap=None):
    """panels: [(panel title, [(row label, {name: value})])]. Each row's
    bars are value / best (best = max if better == "max", else min), drawn
    from 0 to the largest ratio in the panel, or to `cap` times the best,
    where longer bars stop with a "»". Returns the SVG text."""
    colour = colours(names)
    longest = max(len(label) for _, rows in panels for label, _ in rows)
    label_w, bar_w, value_w, bar_h, gap = 12 + 7 * longest, 300, 80, 11, 8
    panel_w = label_w + bar_w + value_w + 20
    rows = max(len(rows) for _, rows in panels)
    panel_h = 24 + rows * (len(names) * bar_h + gap)
    width = panel_w * len(panels) + 20
    legend_h = 20
    height = 54 + legend_h + panel_h + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" {TITLE_FONT}>{escape(title)}</text>',
           f'<text x="10" y="38" {FONT} fill="#555">{escape(note)}</text>']
    x = 10
    for n in names:
        out.append(f'<rect x="{x}" y="50" width="10" height="10" fill="{colour[n]}"/>')
        out.append(f'<text x="{x + 14}" y="59" {FONT}>{escape(n)}</text>')
        x += 24 + 7 * len(n)
    top = 54 + legend_h
    for p, (ptitle, prow) in enumerate(panels):
        px = 10 + p * panel_w
        out.append(f'<text x="{px + label_w}" y="{top + 12}" {FONT} font-weight="bold">{escape(ptitle)}</text>')
        ratios = []
        for _, values in prow:
            present = [v for v in values.values() if v]
            best = (max if better == "max" else min)(present) if present else None
            ratios.append({n: v / best for n, v in values.items() if v and best})
        scale = max([r for row in ratios for r in row.values()] or [1])
        if cap:
            scale = min(scale, cap)
        # The line where a bar equals the best.
        one = px + label_w + bar_w / scale
        out.append(f'<line x1="{one:.1f}" y1="{top + 18}" x2="{one:.1f}" y2="{top + panel_h - gap}" '
                   f'stroke="#999" stroke-dasharray="3,3"/>')
        y = top + 24
        for (label, values), ratio in zip(prow, ratios):
            block = len(names) * bar_h
            out.append(f'<text x="{px + label_w - 6}" y="{y + block / 2 + 4:.1f}" {FONT} '
                       f'text-anchor="end">{escape(label)}</text>')
            for i, n in enumerate(names):
                by = y + i * bar_h
                v = values.get(n)
                if not v:
                    out.append(f'<text x="{px + label_w + 2}" y="{by + 9}" {FONT} fill="#999">{escape(n)}: no result</text>')
                    continue
                w = max(1.0, bar_w * min(ratio[n], scale) / scale)
                out.append(f'<rect x="{px + label_w}" y="{by}" width="{w:.1f}" height="{bar_h - 2}" fill="{colour[n]}">'
                           f'<title>{escape(n)}: {escape(fmt(v))} ({ratio[n]:.2f}x the best)</title></rect>')
                more = " »" if ratio[n] > scale else ""
                out.append(f'<text x="{px + label_w + w + 3:.1f}" y="{by + 9}" {FONT}>{escape(fmt(v) + more)}</text>')
            y += block + gap
    out.append("</svg>")
    return "\n".join(out) + "\n"


def shootout(results, prefix, note=None):
    """Both shoot-out charts from shootout.py's --json output; returns the paths."""
    cfg = results["config"]
    names = [a["name"] for a in cfg["allocators"] if a["present"]]
    names = sorted(names, key=lambda n: n != "rseqalloc")
    workloads = []
    for m in results["medians"]:
        if m["workload"] not in workloads:
            workloads.append(m["workload"])
    cell = {(m["workload"], m["threads"], m["allocator"]): m for m in results["medians"] if m["ok"]}
    note = note or (f'scale {cfg["scale"]:g}, median of {cfg["runs"]} run(s), {cfg["cpus"]} CPUs, {cfg["time"]}; '
                    "dashed line: the best allocator of each row")
    paths = []
    for metric, key, better, fmt, what in (
        ("throughput", "ops_per_sec", "max", lambda v: si(v) + "/s", "throughput (longer is faster)"),
        ("rss", "maxrss_kib", "min", lambda v: f"{v / 1024:.1f} MiB", "peak RSS (shorter is smaller)"),
    ):
        panels = []
        for t in cfg["threads"]:
            # a workload run at its own thread counts (many-threads) has rows in its panels only
            rows = [(w, {n: cell[(w, t, n)][key] for n in names if (w, t, n) in cell}) for w in workloads
                    if any((w, t, n) in cell for n in names)]
            panels.append((f"{t} thread{'s' if t > 1 else ''}", rows))
        path = f"{prefix}-{metric}.svg"
        with open(path, "w") as f:
            f.write(bar_chart(f"Workload shoot-out: {what}", note, panels, names, fmt, better))
        paths.append(path)
    return paths


def table(lines, first):
    """The markdown table whose header row starts with `first`: (header
    cells, [row cells]), stopping at its end or at a bold summary row."""
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]
    for i, line in enumerate(lines):
        if line.startswith(first):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|") or row.startswith("| **"):
                    break
                rows.append(cells(row))
            return cells(line), rows
    sys.exit(f"no table starting with {first!r}")


def markdown(path, out_dir):
    """All three charts from the tables of a markdown page; returns the paths."""
    with open(path) as f:
        lines = f.read().splitlines()
    head, rows = table(lines, "| benchmark |")
    names = head[1:-1]
    summary = {"allocators": names, "benchmarks": [
        {"name": r[0], "ns": {n: float(c.split()[0]) for n, c in zip(names, r[1:]) if c.endswith(" ns")}}
        for r in rows]}
    paths = [micro(summary, os.path.join(out_dir, "micro.svg"))]
    head, rows = table(lines, "| workload | thr |")
    names = [h for h in head[2:] if not h.startswith("rseq ")]
    medians = []
    for r in rows:
        for n, c in zip(names, r[2:]):
            if " / " in c:
                thr, rss = c.split(" / ")[:2]
                medians.append({"workload": r[0], "threads": int(r[1]), "allocator": n, "ok": True,
                                "ops_per_sec": unsi(thr), "maxrss_kib": unmib(rss)})
    results = {"config": {"allocators": [{"name": n, "present": True} for n in names],
                          "threads": sorted({m["threads"] for m in medians})},
               "medians": medians}
    note = f"from the table in {os.path.basename(path)} (medians); dashed line: the best allocator of each row"
    return paths + shootout(results, os.path.join(out_dir, "shootout"), note)


def micro(summary, path):
    """The micro-benchmark chart from the peers benchmark's summary JSON:
    {"allocators": [...], "benchmarks": [{"name": ..., "ns": {allocator: ns}}]}."""
    names = summary["allocators"]
    rows = [(b["name"], b["ns"]) for b in summary["benchmarks"]]
    pairs = [r for r in rows if r[0].startswith("pair/")]
    others = [r for r in rows if not r[0].startswith("pair/")]
    panels = [(title, part) for title, part in (("malloc+free pairs, by size", pairs), ("other patterns", others)) if part]
    svg = bar_chart("Micro-benchmarks: median time per operation (shorter is faster)",
                    "criterion medians through each allocator's GlobalAlloc; dashed line: the fastest of each row; "
                    "» : more than 4x the fastest",
                    panels, names, lambda v: f"{v:.1f} ns", "min", cap=4)
    with open(path, "w") as f:
        f.write(svg)
    return path


def main(argv):
    if len(argv) == 4 and argv[1] == "shootout":
        with open(argv[2]) as f:
            print("\n".join(shootout(json.load(f), argv[3])))
    elif len(argv) == 4 and argv[1] == "micro":
        with open(argv[2]) as f:
            print(micro(json.load(f), argv[3]))
    elif len(argv) == 4 and argv[1] == "markdown":
        os.makedirs(argv[3], exist_ok=True)
        print("\n".join(markdown(argv[2], argv[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
