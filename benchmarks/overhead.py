"""Per-step cost of MARTHE, HD and RTHO as ratios to the plain inner step.

Usage:
  python benchmarks/overhead.py                  # CPU table: MLP and small CNN
  python benchmarks/overhead.py --preset tiny    # seconds, for CI
  python benchmarks/overhead.py --device-preset  # larger batches, for a GPU

Prints a table (median warm step time, ratio to the plain step measured in the
same run, compile time, optimizer-state bytes against the plain inner state),
writes ``overhead.json`` and ``overhead.png`` under ``--out``.
"""

import argparse
import json
import os

import jax
from tqdm import tqdm

from marthe_lab import models
from marthe_lab import overhead as oh
from marthe_lab import report

PRESETS = {
  # batch, val_batch, repeats, steps per repeat, models
  "cpu": dict(batch=100, val_batch=100, repeats=21, steps=10, models=("mlp", "cnn")),
  "tiny": dict(batch=8, val_batch=8, repeats=2, steps=2, models=("mlp-small", "cnn")),
  "device": dict(batch=1024, val_batch=1024, repeats=15, steps=20, models=("mlp", "cnn")),
}
MODELS = {
  "mlp": lambda: models.mlp(784, (500, 500, 500), 10),
  "mlp-small": lambda: models.mlp(784, (32, 32, 32), 10),
  "cnn": lambda: models.small_cnn(),
}
# The floor each MARTHE-over-SGD step is measured against.
FLOOR_REFERENCES = {
  "rtho": oh.FLOOR,
  "knob_free_full": oh.FLOOR,
  "marthe": oh.FLOOR_ADAPTIVE,
}
# Targets (ratios to the plain step).
TARGETS = {"hd": 1.1, "hd_val": 2.1, "rtho": 3.0, "marthe": 3.0}


def run(preset: str, inners, out: str) -> dict:
  cfg = PRESETS[preset]
  rows = []
  combos = [(m, i) for m in cfg["models"] for i in inners]
  # The cost per extra hyperparameter (marthe_multi with K = 1, 2, 4) is
  # measured on the MLP with SGD, in the same interleaved rounds.
  # The hand-written floor of a MARTHE-over-SGD step, with SGD inners.
  methods_of = lambda m, i: (
    oh.METHODS
    + (oh.FLOORS if i == "sgd" else ())
    + (oh.MULTI_METHODS if m.startswith("mlp") and i == "sgd" else ())
  )
  bar = tqdm(total=sum(len(methods_of(m, i)) + cfg["repeats"] for m, i in combos), desc="overhead")
  for model_name, inner in combos:
    model = MODELS[model_name]()
    cases, data = [], None
    for method in methods_of(model_name, inner):
      bar.set_postfix_str(f"{model_name}/{inner}: compiling {method}")
      case, data = oh.build_case(
        model, method, inner, cfg["batch"], cfg["val_batch"], jax.random.PRNGKey(0)
      )
      cases.append(case)
      bar.update()
    bar.set_postfix_str(f"{model_name}/{inner}: timing")
    medians, samples = oh.time_cases(cases, data, cfg["repeats"], cfg["steps"], progress=bar.update)
    plain = next(c for c in cases if c.method == "plain")
    params_bytes = oh.tree_bytes(plain.params)
    inner_float_bytes = sum(
      x.size * x.dtype.itemsize
      for x in jax.tree.leaves(plain.state)
      if jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)
    )
    # Inner state + Z.w + b + the inner-state tangent, plus 1 KiB of scalars.
    memory_limit = plain.state_bytes + 2 * params_bytes + inner_float_bytes + 1024
    for c in cases:
      rows.append(
        dict(
          model=model.name,
          inner=inner,
          method=c.method,
          step_ms=1e3 * medians[c.method],
          ratio=medians[c.method] / medians["plain"],
          ratio_to_marthe=medians[c.method] / medians["marthe"],
          ratio_to_hd_val=medians[c.method] / medians["hd_val"],
          ratio_to_floor=(medians[c.method] / medians[oh.FLOOR] if oh.FLOOR in medians else None),
          ratio_to_floor_adaptive=(
            medians[c.method] / medians[oh.FLOOR_ADAPTIVE] if oh.FLOOR_ADAPTIVE in medians else None
          ),
          target=TARGETS.get(c.method),
          compile_s=c.compile_s,
          state_bytes=c.state_bytes,
          plain_state_bytes=plain.state_bytes,
          params_bytes=params_bytes,
          memory_limit_bytes=memory_limit,
          samples_ms=[1e3 * s for s in samples[c.method]],
        )
      )
  bar.close()
  result = dict(
    preset=preset,
    config=cfg,
    devices=[str(d) for d in jax.devices()],
    **report.machine(),
    rows=rows,
  )
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "overhead.json"), "w") as f:
    json.dump(result, f, indent=1)
  print_table([r for r in rows if r["method"] in oh.METHODS + oh.FLOORS])
  floors = [r for r in rows if r["ratio_to_floor"] and r["method"] in FLOOR_REFERENCES]
  if floors:
    print(
      "\nOver SGD against the hand-written floors (target 1.05): fixed horizons against"
      " 'floor', appendix A's horizon against 'floor_adaptive' (and 'floor', which"
      " lacks its b and second dot product):"
    )
    for r in floors:
      ratios = [(FLOOR_REFERENCES[r["method"]], r["ratio_to_" + FLOOR_REFERENCES[r["method"]]])]
      if FLOOR_REFERENCES[r["method"]] != oh.FLOOR:
        ratios.append((oh.FLOOR, r["ratio_to_floor"]))
      print(
        f"{r['model']:<22} {r['method']:<14} "
        + "  ".join(f"/ {n} {x:.3f}{' over' if x > 1.05 else ''}" for n, x in ratios)
      )
  multi = [r for r in rows if r["method"] in oh.MULTI_METHODS]
  if multi:
    print("\nCost per hyperparameter (marthe_multi, K tuned hyperparameters):")
    print(f"{'model':<22} {'method':<10} {'step ms':>8} {'/ plain':>8} {'/ marthe':>9}")
    for r in multi:
      print(
        f"{r['model']:<22} {r['method']:<10} {r['step_ms']:>8.2f} "
        f"{r['ratio']:>8.2f} {r['ratio_to_marthe']:>9.2f}"
      )
  plot(rows, os.path.join(out, "overhead.png"))
  return result


def print_table(rows) -> None:
  header = (
    f"{'model':<22} {'inner':<9} {'method':<14} {'step ms':>8} {'ratio':>6} "
    f"{'/ hd_val':>8} {'target':>6} {'compile s':>9} {'state MB':>9} "
    f"{'limit MB':>9}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    target = f"{r['target']:.1f}" if r["target"] else ""
    flag = " time-over" if r["target"] and r["ratio"] > r["target"] else ""
    mem_flag = " memory-over" if r["state_bytes"] > r["memory_limit_bytes"] else ""
    print(
      f"{r['model']:<22} {r['inner']:<9} {r['method']:<14} {r['step_ms']:>8.2f} "
      f"{r['ratio']:>6.2f} {r['ratio_to_hd_val']:>8.2f} {target:>6} "
      f"{r['compile_s']:>9.2f} "
      f"{r['state_bytes'] / 2**20:>9.2f} {r['memory_limit_bytes'] / 2**20:>9.2f}"
      f"{flag}{mem_flag}"
    )
  print(
    "(ratio: to the plain step; / hd_val: to HD with a validation "
    "objective, the knob-free first-order step's reference, target 1.05; "
    "time-over: the ratio exceeds its target; memory-over: the state "
    "exceeds inner state + 2 params + inner-state tangent + 1 KiB)"
  )


def plot(rows, path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = [r for r in rows if r["method"] in oh.METHODS]
  groups = sorted({(r["model"], r["inner"]) for r in rows})
  methods = [m for m in oh.METHODS if m != "plain"]
  fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(groups), 3.6))
  width = 0.8 / len(methods)
  for j, method in enumerate(methods):
    ratios = [
      next(r["ratio"] for r in rows if (r["model"], r["inner"]) == g and r["method"] == method)
      for g in groups
    ]
    ax.bar([i + j * width for i in range(len(groups))], ratios, width, label=method)
  for target in TARGETS.values():
    ax.axhline(target, color="gray", lw=0.6, ls=":")
  ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
  ax.set_xticklabels([f"{m}\n{i}" for m, i in groups], fontsize=7)
  ax.set_ylabel("step time / plain step")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument(
    "--device-preset",
    action="store_true",
    help="the GPU preset: larger batches (same as --preset device)",
  )
  parser.add_argument("--inners", nargs="+", default=list(oh.INNERS), choices=list(oh.INNERS))
  parser.add_argument("--out", default="results/overhead")
  args = parser.parse_args(argv)
  return run("device" if args.device_preset else args.preset, args.inners, args.out)


if __name__ == "__main__":
  main()
