"""bin/report: a study's tables and figures, in the paper's layout.

`write_report(root, out)` writes out/report.md (and report.html) with
  - a Table-1-style table per evaluation setting of the pre-logits
    (architecture x task x width, the best of each column in bold, the
    paper's number in brackets where the setting is one it reports),
  - where the study has random-init baselines, each cell's best layer and
    pre-logits against those of random initialisation (the gain, marked
    where it exceeds the seeds' noise),
  - the supplementary skip-connection ablation table, where the study has
    cells that differ only in their backbone option,
  - the cells' status and timings,
and the Figure 2-8 plots the study has the cells for (figures.py).
"""
import html
import os
import re

from selfsup.study import results as results_lib
from selfsup.study.labels import (LAYER_ORDER, TASK_ORDER, arch_label,
                                  context, describe, order)
from selfsup.study.spec import fmt

def column_label(row):
  return f"{row['task']} x{fmt(row['width'])}"


def paper_index(paper):
  """{key: entry} over the paper's entries (see `paper_key`)."""
  return {paper_key(e): e for e in paper["entries"]}


def paper_key(row):
  return (row.get("pretrain_source"), row.get("task"), row.get("backbone"),
          float(row.get("width") or 0), row.get("representation_size"),
          bool(row.get("skip_connections", True)), row.get("protocol"),
          row.get("layer"), row.get("source"), row.get("eval_split"),
          row.get("fraction"))


def paper_value(row, index):
  """The paper's entry for `row`'s setting, or None. Only cells whose
  option is none or the skip ablation compare."""
  kwargs = row.get("option_kwargs") or {}
  if set(kwargs) - {"skip_connections"}:
    return None
  keyed = dict(row, pretrain_source=row.get("pretrain_source"))
  return index.get(paper_key(keyed))


_NOISE_NOTE = ("a ± b: mean and standard deviation over the seeds. †: the "
               "best architecture's lead over the next exceeds twice the "
               "standard error of the difference (Welch), i.e. beyond the "
               "noise of the seeds; a bold number without † is within it.")


def percent(row):
  """Top-1 in percent; `mean ± std` where the row pools several seeds."""
  text = f"{100 * row['top1']:.1f}"
  if row.get("n_seeds", 1) > 1:
    text += f" ± {100 * row['top1_std']:.1f}"
  return text


def main_tables(rows, paper):
  """[(context, header, body rows, notes)] for the pre-logits results."""
  index = paper_index(paper)
  tables = []
  pre = [r for r in rows if r["layer"] == "pre_logits"]
  for ctx in order(context(r) for r in pre):
    sel = [r for r in pre if context(r) == ctx]
    tasks = order((r["task"] for r in sel), TASK_ORDER)
    columns = []
    for task in tasks:
      widths = sorted({r["width"] for r in sel if r["task"] == task})
      columns += [(task, w) for w in widths]
    archs = order(arch_label(r) for r in sel)
    cell = {(arch_label(r), r["task"], r["width"]): r for r in sel}
    best, clear = {}, {}
    for col in columns:
      ranked = sorted((cell[(a,) + col] for a in archs if (a,) + col in cell),
                      key=lambda r: -r["top1"])
      best[col] = ranked[0]["top1"] if ranked else None
      clear[col] = (results_lib.beyond_noise(ranked[0], ranked[1])
                    if len(ranked) > 1 else None)
    body, matched = [], []
    for arch in archs:
      line = [arch]
      for col in columns:
        r = cell.get((arch,) + col)
        if r is None:
          line.append("")
          continue
        text = percent(r)
        if len(archs) > 1 and r["top1"] == best[col]:
          text = f"**{text}**" + ("†" if clear[col] else "")
        ref = paper_value(r, index)
        if ref:
          text += f" [{ref['top1']:.1f}]"
          matched.append(ref["table"])
        line.append(text)
      body.append(line)
    header = ["architecture"] + [f"{t} x{fmt(w)}" for t, w in columns]
    notes = []
    if any(r.get("n_seeds", 1) > 1 for r in sel):
      notes.append(_NOISE_NOTE)
    if matched:
      notes.append("[x]: the paper's number for this setting, from the "
                   + ", ".join(sorted(set(matched))) + ".")
    tables.append((ctx, header, body, notes))
  return tables


def layer_tables(rows):
  """[(context, header, body)]: every cell's accuracy layer by layer (the
  numbers of Figure 5), where a study evaluated more than one layer."""
  out = []
  for ctx in order(context(r) for r in rows):
    sel = [r for r in rows if context(r) == ctx]
    layers = order((r["layer"] for r in sel), LAYER_ORDER)
    if len(layers) < 2:
      continue
    value = {(r["cell"], r["layer"]): r for r in sel}
    body = []
    for cell in order(r["cell"] for r in sel):
      line = [cell]
      for layer in layers:
        r = value.get((cell, layer))
        line.append(percent(r) if r else "")
      body.append(line)
    out.append((ctx, ["cell"] + layers, body))
  return out


def gain_tables(rows):
  """[(context, header, body, notes)]: each pretrained cell's best layer
  against the best layer of the same architecture at random initialisation
  (the `random_init` baseline at the same width, or at its only width), and
  the same at pre_logits: the question bin/demo asks, per cell."""
  out = []
  for ctx in order(context(r) for r in rows):
    sel = [r for r in rows if context(r) == ctx]
    random = {}
    for r in sel:
      if r["task"] == "random_init":
        random.setdefault((r["backbone"], r["width"]), {})[r["layer"]] = r
    if not random:
      continue
    by_cell = {}
    for r in sel:
      if r["task"] != "random_init":
        by_cell.setdefault((r["task"], r["backbone"], r["width"]),
                           {})[r["layer"]] = r
    body, other_width = [], False
    tasks = order((k[0] for k in by_cell), TASK_ORDER)
    for task in tasks:
      for key in sorted(k for k in by_cell if k[0] == task):
        _, backbone, width = key
        widths = sorted(w for b, w in random if b == backbone)
        if not widths:
          continue
        base_width = width if width in widths else widths[-1]
        other_width |= base_width != width
        base = random[(backbone, base_width)]
        layers = by_cell[key]
        best = max(layers.values(), key=lambda r: r["top1"])
        base_best = max(base.values(), key=lambda r: r["top1"])
        gain = 100 * (best["top1"] - base_best["top1"])
        mark = "†" if results_lib.beyond_noise(best, base_best) else ""
        line = [f"{task} {backbone} x{fmt(width)}", best["layer"],
                percent(best), f"{percent(base_best)} ({base_best['layer']})",
                f"{gain:+.1f}{mark}"]
        if "pre_logits" in layers and "pre_logits" in base:
          a, b = layers["pre_logits"], base["pre_logits"]
          line.append(f"{100 * (a['top1'] - b['top1']):+.1f}"
                      + ("†" if results_lib.beyond_noise(a, b) else ""))
        else:
          line.append("")
        body.append(line)
    if not body:
      continue
    notes = ["†: the difference exceeds twice the standard error of the "
             "difference over the seeds (Welch)."]
    if other_width:
      notes.append("Where the baseline was not run at a cell's width, the "
                   "cell is compared with the baseline's width.")
    header = ["cell", "best layer", "top-1", "random init's best",
              "gain", "gain at pre_logits"]
    out.append((ctx, header, body, notes))
  return out


def ablation_tables(rows, paper):
  """The skip-connection (or any backbone option) ablation: cells alike but
  for their option, layer by layer, with the difference (supplementary
  Table 1)."""
  index = paper_index(paper)
  out = []
  groups = {}
  for r in rows:
    key = (context(r), r["task"], r["backbone"], r["width"],
           r.get("representation_size"), r.get("seed"))
    groups.setdefault(key, []).append(r)
  for key, sel in sorted(groups.items(), key=lambda kv: str(kv[0])):
    # The option with the fewest backbone kwargs (the default) first, so the
    # difference reads as the paper's: skip - no skip.
    kwargs = {r.get("option") or "": len(r.get("option_kwargs") or {})
              for r in sel}
    options = sorted(kwargs, key=lambda o: (kwargs[o], o))
    if len(options) < 2:
      continue
    layers = order((r["layer"] for r in sel), LAYER_ORDER)
    value = {(r.get("option") or "", r["layer"]): r for r in sel}
    header = ["option"] + layers
    body = []
    for option in options:
      line = [option or "(default)"]
      for layer in layers:
        r = value.get((option, layer))
        text = percent(r) if r else ""
        ref = paper_value(r, index) if r else None
        if ref:
          text += f" [{ref['top1']:.1f}]"
        line.append(text)
      body.append(line)
    base, other = options[0], options[1]
    diff = [f"diff. {base or '(default)'} - {other}"]
    for layer in layers:
      a, b = value.get((base, layer)), value.get((other, layer))
      diff.append(f"{100 * (a['top1'] - b['top1']):+.1f}" if a and b else "")
    body.append(diff)
    ctx, task, backbone, width = key[:4]
    out.append((f"{task}, {backbone} x{fmt(width)}; {describe(ctx)}",
                header, body))
  return out


def status_table(cells):
  header = ["cell", "status", "pretrain s", "evaluation s", "error"]
  body = []
  for cell in cells:
    steps = cell.get("steps", [])
    pre = sum(s.get("seconds") or 0 for s in steps if s["kind"] == "pretrain")
    ev = sum(s.get("seconds") or 0 for s in steps if s["kind"] == "eval")
    body.append([cell["name"], cell.get("status") or "?", f"{pre:.0f}",
                 f"{ev:.0f}", (cell.get("error") or "").replace("|", "/")])
  return header, body


def markdown_table(header, body):
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in line) + " |" for line in body]
  return "\n".join(lines)


def build(root, out, figures=True, paper=None):
  """The report as markdown blocks, and the figures written under `out`."""
  cells = results_lib.load_cells(root)
  rows = results_lib.pool_seeds(results_lib.rows(cells))
  paper = paper or results_lib.load_paper()
  name = _study_name(cells)
  blocks = [f"# Study report: {name}",
            f"{len(cells)} cells under `{root}`, "
            f"{sum(c.get('status') == 'done' for c in cells)} done, "
            f"{len(rows)} evaluation results. Top-1 accuracy in percent. "
            "Paper numbers: Kolesnikov et al. 2019, from "
            "selfsup/study/paper_results.json (each with its table)."]
  for i, (ctx, header, body, notes) in enumerate(main_tables(rows, paper)):
    blocks.append(f"## Table {i + 1}: linear evaluation of the pre-logits")
    blocks.append(describe(ctx) + ". Rows: architecture; columns: task and "
                  "widening factor; bold: the best architecture of each "
                  "column.")
    blocks.append(markdown_table(header, body))
    blocks += notes
  for ctx, header, body in layer_tables(rows):
    blocks.append("## Layer by layer")
    blocks.append(describe(ctx) + ". Spatial endpoints adaptively "
                  "max-pooled to at most 9,000 features, as the paper.")
    blocks.append(markdown_table(header, body))
  for ctx, header, body, notes in gain_tables(rows):
    blocks.append("## Best layer against random initialisation")
    blocks.append(describe(ctx) + ". Each cell's best layer (by its mean "
                  "over the seeds) against the best layer of the same "
                  "architecture left at its random initialisation; gains "
                  "in points of top-1.")
    blocks.append(markdown_table(header, body))
    blocks += notes
  for title, header, body in ablation_tables(rows, paper):
    blocks.append("## Ablation: backbone options layer by layer")
    blocks.append(title + ". The paper's is supplementary Table 1 (ResNet18 "
                  "v2, skip connections or none).")
    blocks.append(markdown_table(header, body))
  if figures:
    # Only the figures need matplotlib (the [study] extra), imported late.
    from selfsup.study import figures as figures_lib
    os.makedirs(out, exist_ok=True)
    curves = results_lib.probe_curves(cells)
    for path, caption in figures_lib.draw_all(rows, out, curves):
      blocks.append(f"## {caption}")
      blocks.append(f"![{caption}]({os.path.basename(path)})")
  header, body = status_table(cells)
  blocks.append("## Cells")
  blocks.append(markdown_table(header, body))
  return blocks


def write_report(root, out, figures=True):
  """Writes out/report.md and out/report.html; returns the paths written."""
  blocks = build(root, out, figures=figures)
  os.makedirs(out, exist_ok=True)
  md = os.path.join(out, "report.md")
  with open(md, "w") as f:
    f.write("\n\n".join(blocks) + "\n")
  page = os.path.join(out, "report.html")
  with open(page, "w") as f:
    f.write(_html(blocks))
  pngs = sorted(os.path.join(out, p) for p in os.listdir(out)
                if p.endswith(".png"))
  return [md, page] + pngs


def _study_name(cells):
  names = sorted({c["settings"].get("study") or "?" for c in cells})
  return ", ".join(names)


def _html(blocks):
  """The same content as report.md, as one HTML page."""
  parts = ["<!doctype html><meta charset='utf-8'><title>selfsup study</title>"
           "<style>body{font-family:sans-serif;max-width:80em;margin:auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;"
           "padding:2px 6px;text-align:right}img{max-width:100%}"
           "</style>"]
  for block in blocks:
    if block.startswith("#"):
      level = len(block) - len(block.lstrip("#"))
      parts.append(f"<h{level}>{html.escape(block.lstrip('# '))}</h{level}>")
    elif block.startswith("!["):
      src = block[block.index("(") + 1:-1]
      parts.append(f"<img src='{html.escape(src)}'>")
    elif block.startswith("|"):
      lines = block.splitlines()
      cells = [l.strip("|").split(" | ") for l in lines if not
               l.startswith("|---")]
      head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
      rows = [f"<tr>{head}</tr>"]
      rows += [f"<tr>{''.join(f'<td>{_inline(c)}</td>' for c in r)}</tr>"
               for r in cells[1:]]
      parts.append("<table>" + "".join(rows) + "</table>")
    else:
      parts.append(f"<p>{_inline(block)}</p>")
  return "\n".join(parts) + "\n"


def _inline(text):
  text = html.escape(text.strip())
  text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
  return re.sub(r"`(.+?)`", r"<code>\1</code>", text)
