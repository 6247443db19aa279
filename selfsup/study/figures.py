"""The paper's figures, drawn from a study's rows (matplotlib, optional).

Each `fig*` returns [(png path, caption)] and draws only what the rows hold
the cells for: Figure 2 (architectures at the largest width, per task),
3 (MLP vs linear), 4 (pretext vs downstream accuracy), 5 (layer by layer),
6 (width x representation size), 7 (low data), 8 (SGD schedules).
"""
import os
import re
import textwrap

from selfsup.study import labels
from selfsup.study.spec import fmt

try:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - exercised without the extra
  plt = None

TASKS = labels.TASK_ORDER


def draw_all(rows, out, curves=()):
  """Every figure the rows (and the online probe's `curves`, see
  results.probe_curves) have data for: [(path, caption)]."""
  if plt is None:
    raise ImportError("the figures need matplotlib: pip install "
                      "'selfsup[study]' (or run bin/report --nofigures).")
  made = []
  for fig in (fig2, fig3, fig4, fig5, fig6, fig7, fig8):
    made += fig(rows, out)
  return made + probe_figure(curves, out)


def _task_rank(task):
  return (TASKS.index(task) if task in TASKS else len(TASKS), task)


def probe_figure(curves, out):
  """The online probe's top-1 against training steps, one panel per width,
  one curve per task and backbone (mean over seeds, shaded +- std)."""
  if not curves:
    return []
  widths = sorted({c["width"] for c in curves}, key=float)
  fig, axes = _grid(len(widths))
  for ax, width in zip(axes, widths):
    for c in sorted((c for c in curves if c["width"] == width),
                    key=lambda c: (_task_rank(c["task"]), c["backbone"])):
      top = [100 * v for v in c["top1"]]
      line, = ax.plot(c["steps"], top, "-", lw=1.2,
                      label=f"{c['task']}, {c['backbone']}")
      if c["n_seeds"] > 1:
        err = [100 * v for v in c["std"]]
        ax.fill_between(c["steps"], [t - e for t, e in zip(top, err)],
                        [t + e for t, e in zip(top, err)],
                        color=line.get_color(), alpha=0.2)
    ax.set_title(f"width x{fmt(width)}", fontsize=9)
    ax.set_xlabel("training step")
    ax.set_ylabel("online probe top-1 [%]")
  axes[0].legend(fontsize=6)
  split = curves[0].get("eval_split")
  return [_save(fig, out, "fig_probe",
                f"Online linear probe (pre-logits) on {split} during "
                "pretraining, mean over seeds")]


def _slug(text):
  return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60]


def _ctx_name(ctx):
  c = dict(ctx)
  return _slug(f"{c.get('source')}_{c.get('protocol')}_"
               f"{'all' if not c.get('fraction') else c['fraction']}")


_arch = labels.arch_label


def _tasks(rows):
  return labels.order({r["task"] for r in rows}, TASKS)


def _err(row):
  """The error bar of a pooled row: its standard deviation over seeds, in
  points (0 for one seed)."""
  return 100 * (row.get("top1_std") or 0.0)


def _save(fig, out, name, caption):
  path = os.path.join(out, name + ".png")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path, caption


def _grid(n):
  cols = min(n, 3)
  rows = (n + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows),
                           squeeze=False)
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return fig, list(axes.flat)


def _by_context(rows, exclude=()):
  groups = {}
  for r in rows:
    groups.setdefault(labels.context(r, exclude), []).append(r)
  return groups


def fig2(rows, out):
  """Architectures side by side for each task at its largest width."""
  made = []
  pre = [r for r in rows if r["layer"] == "pre_logits"]
  for ctx, sel in _by_context(pre).items():
    tasks = _tasks(sel)
    archs = labels.order(_arch(r) for r in sel)
    if len(archs) < 2 and len(tasks) < 2:
      continue
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(tasks) * len(archs) / 2),
                                    4))
    step = 0.8 / len(archs)
    for j, arch in enumerate(archs):
      heights, errors = [], []
      for task in tasks:
        cand = [r for r in sel if r["task"] == task and
                _arch(r) == arch and r["width"] == max(
                    (c["width"] for c in sel if c["task"] == task and
                     _arch(c) == arch), default=None)]
        top = max(cand, key=lambda r: r["top1"], default=None)
        heights.append(100 * top["top1"] if top else 0)
        errors.append(_err(top) if top else 0)
      ax.bar([i + j * step for i in range(len(tasks))], heights, step,
             yerr=errors if any(errors) else None, capsize=2, label=arch)
    ax.set_xticks([i + 0.4 - step / 2 for i in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=15)
    ax.set_ylabel("top-1 accuracy [%]")
    ax.set_title("Figure 2: largest width per task\n"
                 + textwrap.fill(labels.describe(ctx), 90), fontsize=7)
    ax.legend(fontsize=7)
    made.append(_save(fig, out, f"fig2_{_ctx_name(ctx)}",
                      f"Figure 2 (architectures at the largest width): "
                      f"{labels.describe(ctx)}"))
  return made


def fig3(rows, out):
  """MLP vs linear, one point per cell and layer."""
  def key(r):
    return r["cell"], r["layer"], r["source"], r["eval_split"], r["fraction"]
  mlp = {key(r): r for r in rows if r["protocol"] == "mlp"}
  pairs = [(r, mlp[key(r)]) for r in rows
           if r["protocol"] in ("lbfgs", "sgd_linear") and key(r) in mlp]
  if not pairs:
    return []
  fig, ax = plt.subplots(figsize=(5, 5))
  for task in _tasks([p[0] for p in pairs]):
    sel = [p for p in pairs if p[0]["task"] == task]
    ax.scatter([100 * a["top1"] for a, _ in sel],
               [100 * b["top1"] for _, b in sel], label=task, s=18)
  lo = min(100 * min(a["top1"], b["top1"]) for a, b in pairs) - 2
  hi = max(100 * max(a["top1"], b["top1"]) for a, b in pairs) + 2
  ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
  ax.set_xlabel("linear top-1 [%]")
  ax.set_ylabel("MLP top-1 [%]")
  ax.set_title("Figure 3: MLP vs linear evaluation", fontsize=9)
  ax.legend(fontsize=7)
  return [_save(fig, out, "fig3_mlp_vs_linear",
                "Figure 3 (MLP vs linear evaluation, same cells, layers "
                "and data)")]


def fig4(rows, out):
  """Pretext accuracy against downstream accuracy, per task."""
  made = []
  pre = [r for r in rows if r["layer"] == "pre_logits" and
         r.get("pretext") is not None and r["kind"] == "pretext"]
  for ctx, sel in _by_context(pre).items():
    tasks = _tasks(sel)
    if len(sel) < 2:
      continue
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
      for arch in labels.order(_arch(r) for r in sel):
        pts = [r for r in sel if r["task"] == task and
               _arch(r) == arch]
        ax.errorbar([100 * r["pretext"] for r in pts],
                    [100 * r["top1"] for r in pts],
                    yerr=[_err(r) for r in pts], fmt="o", ms=4, capsize=2,
                    label=arch)
      ax.set_title(task, fontsize=9)
      ax.set_xlabel("pretext accuracy [%]")
      ax.set_ylabel("downstream top-1 [%]")
    axes[0].legend(fontsize=7)
    made.append(_save(fig, out, f"fig4_{_ctx_name(ctx)}",
                      "Figure 4 (pretext accuracy vs downstream accuracy, "
                      f"pre-logits): {labels.describe(ctx)}"))
  return made


def fig5(rows, out):
  """Accuracy layer by layer, per task, one line per architecture."""
  made = []
  for ctx, sel in _by_context(rows).items():
    if len({r["layer"] for r in sel}) < 2:
      continue
    tasks = _tasks(sel)
    fig, axes = _grid(len(tasks))
    layers = labels.order({r["layer"] for r in sel},
                               labels.LAYER_ORDER)
    for ax, task in zip(axes, tasks):
      cand = [r for r in sel if r["task"] == task]
      widest = max(r["width"] for r in cand)
      for arch in labels.order(_arch(r) for r in cand):
        pts = {r["layer"]: r for r in cand if r["width"] == widest and
               _arch(r) == arch}
        xs = [i for i, l in enumerate(layers) if l in pts]
        ax.errorbar(xs, [100 * pts[layers[i]]["top1"] for i in xs],
                    yerr=[_err(pts[layers[i]]) for i in xs], fmt="o-",
                    capsize=2, label=arch)
      ax.set_xticks(range(len(layers)))
      ax.set_xticklabels(layers, rotation=30, fontsize=7)
      ax.set_title(f"{task} x{fmt(widest)}", fontsize=9)
      ax.set_ylabel("top-1 [%]")
    axes[0].legend(fontsize=7)
    made.append(_save(fig, out, f"fig5_{_ctx_name(ctx)}",
                      f"Figure 5 (layer by layer): {labels.describe(ctx)}"))
  return made


def fig6(rows, out):
  """Width x representation size (the extra linear layer of section 4.6)."""
  made = []
  pre = [r for r in rows if r["layer"] == "pre_logits" and
         r.get("representation_size")]
  for ctx, sel in _by_context(pre).items():
    if len({r["representation_size"] for r in sel}) < 2:
      continue
    groups = labels.order((r["task"], r["backbone"]) for r in sel)
    fig, axes = _grid(len(groups))
    for ax, (task, backbone) in zip(axes, groups):
      cand = [r for r in sel if r["task"] == task and r["backbone"] == backbone]
      for width in sorted({r["width"] for r in cand}):
        pts = sorted((r["representation_size"], 100 * r["top1"])
                     for r in cand if r["width"] == width)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-",
                label=f"x{fmt(width)}")
      ax.set_xscale("log", base=2)
      ax.set_xlabel("representation size")
      ax.set_ylabel("top-1 [%]")
      ax.set_title(f"{task}, {backbone}", fontsize=9)
      ax.legend(fontsize=7, title="width")
    made.append(_save(fig, out, f"fig6_{_ctx_name(ctx)}",
                      "Figure 6 (widening factor x representation size): "
                      f"{labels.describe(ctx)}"))
  return made


def fig7(rows, out):
  """Accuracy against width for each fraction of the labelled data."""
  made = []
  pre = [r for r in rows if r["layer"] == "pre_logits"]
  for ctx, sel in _by_context(pre, exclude=("fraction",)).items():
    if len({r["fraction"] for r in sel}) < 2:
      continue
    tasks = _tasks(sel)
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
      cand = [r for r in sel if r["task"] == task]
      for arch in labels.order(_arch(r) for r in cand):
        for fraction in sorted({r["fraction"] or 1.0 for r in cand}):
          pts = sorted((r["width"], 100 * r["top1"]) for r in cand
                       if (r["fraction"] or 1.0) == fraction and
                       _arch(r) == arch)
          ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-",
                  label=f"{arch}, {100 * fraction:g}%")
      ax.set_xlabel("widening factor")
      ax.set_ylabel("top-1 [%]")
      ax.set_title(task, fontsize=9)
    axes[0].legend(fontsize=6)
    made.append(_save(fig, out, f"fig7_{_ctx_name(ctx)}",
                      "Figure 7 (low data: 100% and subsets of the training "
                      f"data): {labels.describe(ctx)}"))
  return made


def fig8(rows, out):
  """SGD schedules: final accuracy per schedule, and curves if recorded."""
  sgd = [r for r in rows if r["protocol"] == "sgd_linear" and
         r.get("sgd_schedule") is not None]
  if len({r["sgd_schedule"] for r in sgd}) < 2:
    return []
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in sorted(sgd, key=lambda r: (r["cell"], str(r["sgd_schedule"]))):
    history = [h for h in (r.get("history") or []) if "top1" in h]
    label = f"{r['cell']} {r['layer']}, {r['sgd_schedule']}"
    if len(history) > 1:
      ax.plot([h.get("epoch", i + 1) for i, h in enumerate(history)],
              [100 * h["top1"] for h in history], label=label)
    else:
      ax.scatter([len(r.get("history") or []) or 0], [100 * r["top1"]],
                 label=label)
  ax.set_xlabel("epoch")
  ax.set_ylabel("top-1 [%]")
  ax.set_title("Figure 8: SGD schedules of the linear evaluation", fontsize=9)
  ax.legend(fontsize=6)
  return [_save(fig, out, "fig8_sgd_schedules",
                "Figure 8 (SGD schedules: when the learning rate first "
                "decays)")]
