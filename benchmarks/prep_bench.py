"""modelprep floors, on both examples, side by side in one run.

    .venv/bin/python benchmarks/prep_bench.py [--out benchmarks/results] [--budget 1.0] [--workdir DIR]

Trains the digits MLP and the digits CNN (scikit-learn's digits; nothing is downloaded) into
a work folder, runs `prep` with every technique on each (fresh cache, threads=1 as the server
runs), prints one table, writes results.json and results.md, and checks the floors:

1. int8: at most 30% of the float32 LiteRT artifact's bytes, accuracy drop at most 0.5 points;
2. pruning (sparsity >= 80%) then int8, gzipped: at least 10x smaller than the float32 LiteRT
   artifact gzipped, accuracy drop at most 1 point;
3. on the CNN, int8 single-sample p50 at most 0.6x the float32 LiteRT artifact's;
4. the chosen variant's single-sample p50 at least 100x lower than Keras `model.predict`'s.

Exits 1 when a floor is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EXAMPLES = {
    # name: (trainer module, model file, input name, sample shape, objective, pruning)
    "digits-mlp": (
        "modelprep.examples.digits",
        "digits.keras",
        "pixels",
        (64,),
        "smallest",
        {"target_sparsity": 0.88, "epochs": 10},
    ),
    "digits-cnn": (
        "modelprep.examples.digits_cnn",
        "digits_cnn.keras",
        "image",
        (32, 32, 1),
        "fastest",
        {"target_sparsity": 0.9, "epochs": 4},
    ),
}
CLUSTERING = {"clusters": 16, "epochs": 1}
QAT = {"epochs": 1}


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        p: md.version(p)
        for p in ("tensorflow", "keras", "ai-edge-litert", "onnxruntime", "tensorflow-model-optimization")
    }
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def run_example(name: str, workdir: Path, cache_dir: Path, budget: float) -> dict[str, Any]:
    import importlib

    from iac.spec.models import Clustering, Optimize, Pruning, QuantizationAwareTraining
    from modelprep.cache import Cache
    from modelprep.prep import prep
    from modelprep.request import PrepRequest

    module, model_file, input_name, shape, objective, pruning = EXAMPLES[name]
    folder = workdir / name
    model_path = folder / "model" / model_file
    started = time.perf_counter()
    if not model_path.is_file():
        print(f"[{name}] training", file=sys.stderr, flush=True)
        importlib.import_module(module).train(folder)
    trained = time.perf_counter()
    request = PrepRequest(
        model_path=str(model_path),
        model_sha256=None,
        calibration_path=str(folder / "data" / "calibration.npz"),
        evaluation_path=str(folder / "data" / "evaluation.npz"),
        input_name=input_name,
        sample_shape=shape,
        fine_tuning_path=str(folder / "data" / "train.npz"),
        optimize=Optimize(
            max_accuracy_drop=0.005,
            objective=objective,
            pruning=Pruning(**pruning),
            clustering=Clustering(**CLUSTERING),
            qat=QuantizationAwareTraining(**QAT),
        ),
        threads=1,
        all_variants=True,
        latency_budget_s=budget,
    )
    result = prep(request, Cache(cache_dir), progress=lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True))
    return {
        "report": result.report.model_dump(mode="json", exclude_none=True),
        "train_s": round(trained - started, 1),
        "prep_s": round(time.perf_counter() - trained, 1),
        "chart": str(result.chart_path),
    }


def floors(name: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {e["name"]: e for e in report["variants"]}
    base = {e["name"]: e for e in report["baselines"]}
    f32, int8, pruned = base["litert-float32"], rows["litert-int8"], rows["pruned-int8"]
    chosen = next(e for e in report["variants"] if e["chosen"])
    checks = [
        {
            "floor": "int8 bytes <= 30% of float32 LiteRT",
            "value": int8["size_bytes"] / f32["size_bytes"],
            "limit": 0.30,
            "op": "<=",
        },
        {"floor": "int8 accuracy drop <= 0.5 pt", "value": int8["accuracy_drop"] * 100, "limit": 0.5, "op": "<="},
        {"floor": "pruned sparsity >= 80%", "value": pruned["notes"]["sparsity"] * 100, "limit": 80.0, "op": ">="},
        {
            "floor": "pruned-int8 gzip >= 10x smaller than float32 gzip",
            "value": f32["gzip_bytes"] / pruned["gzip_bytes"],
            "limit": 10.0,
            "op": ">=",
        },
        {
            "floor": "pruned-int8 accuracy drop <= 1 pt",
            "value": pruned["accuracy_drop"] * 100,
            "limit": 1.0,
            "op": "<=",
        },
        {
            "floor": f"chosen ({chosen['name']}) p50 >= 100x lower than keras model.predict",
            "value": base["keras-predict"]["latency_p50_us"] / chosen["latency_p50_us"],
            "limit": 100.0,
            "op": ">=",
        },
    ]
    if name == "digits-cnn":
        checks.append(
            {
                "floor": "int8 p50 <= 0.6x float32 LiteRT p50",
                "value": int8["latency_p50_us"] / f32["latency_p50_us"],
                "limit": 0.6,
                "op": "<=",
            }
        )
    for check in checks:
        check["example"] = name
        check["value"] = round(check["value"], 3)
        check["ok"] = check["value"] <= check["limit"] if check["op"] == "<=" else check["value"] >= check["limit"]
    return checks


def table_rows(name: str, report: dict[str, Any]) -> list[list[str]]:
    rows = []
    names = {e["name"] for e in report["variants"]}
    for e in [*(b for b in report["baselines"] if b["name"] not in names), *report["variants"]]:
        mark = (
            "baseline"
            if e.get("baseline") and e["name"] not in names
            else (
                "**chosen**"
                if e.get("chosen")
                else (
                    "fails gate"
                    if not e.get("passed_gate")
                    else ("listed only" if not e.get("eligible", True) else "passes")
                )
            )
        )
        rows.append(
            [
                name,
                e["name"],
                e["runtime"],
                f"{e['size_bytes']:,}",
                f"{e['gzip_bytes']:,}",
                f"{e['accuracy']:.4f}",
                f"{e.get('accuracy_drop', 0) * 100:+.2f}",
                f"{e['latency_p50_us']:,.1f}",
                f"{e['latency_p99_us']:,.1f}",
                f"{e['throughput_per_s']:,.0f}",
                mark,
            ]
        )
    return rows


HEADER = [
    "example",
    "variant",
    "runtime",
    "bytes",
    "gzip bytes",
    "accuracy",
    "drop pt",
    "p50 µs",
    "p99 µs",
    "batch-32/s",
    "",
]


def markdown(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per latency loop")
    parser.add_argument("--workdir", type=Path, default=None, help="reuse trained examples from here")
    parser.add_argument("--examples", nargs="+", choices=list(EXAMPLES), default=list(EXAMPLES))
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="prep-bench-"))
    cache_dir = Path(tempfile.mkdtemp(prefix="prep-bench-cache-"))  # fresh: every number is measured now
    results = {name: run_example(name, workdir, cache_dir, args.budget) for name in args.examples}

    from rich.console import Console
    from rich.table import Table

    rows = [row for name, r in results.items() for row in table_rows(name, r["report"])]
    checks = [c for name, r in results.items() for c in floors(name, r["report"])]
    console = Console(width=200)
    table = Table(title="modelprep: every variant, threads=1")
    for column in HEADER:
        table.add_column(
            column, justify="right" if column not in ("example", "variant", "runtime", "") else "left", no_wrap=True
        )
    for row in rows:
        table.add_row(*row)
    console.print(table)
    floor_table = Table(title="floors")
    for column in ("example", "floor", "measured", "limit", ""):
        floor_table.add_column(column, no_wrap=True)
    for c in checks:
        floor_table.add_row(
            c["example"],
            c["floor"],
            f"{c['value']}",
            f"{c['op']} {c['limit']}",
            "[green]ok[/]" if c["ok"] else "[red]MISSED[/]",
        )
    console.print(floor_table)

    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "command": " ".join(["python benchmarks/prep_bench.py", *sys.argv[1:]]),
        "machine": info,
        "threads": 1,
        "latency_budget_s": args.budget,
        "settings": {
            "pruning": {n: e[5] for n, e in EXAMPLES.items() if n in results},
            "clustering": CLUSTERING,
            "qat": QAT,
            "max_accuracy_drop": 0.005,
        },
        "examples": {
            name: {
                "train_s": r["train_s"],
                "prep_s": r["prep_s"],
                "chosen": r["report"]["variant"],
                "objective": r["report"]["objective"],
                "baselines": r["report"]["baselines"],
                "variants": r["report"]["variants"],
            }
            for name, r in results.items()
        },
        "floors": checks,
        "passed": all(c["ok"] for c in checks),
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    floor_rows = [
        [c["example"], c["floor"], str(c["value"]), f"{c['op']} {c['limit']}", "ok" if c["ok"] else "MISSED"]
        for c in checks
    ]
    md = (
        "\n\n".join(
            [
                f"Command: `{summary['command']}`",
                f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, TensorFlow {info['tensorflow']}, "
                f"LiteRT {info['ai-edge-litert']}, ONNX Runtime {info['onnxruntime']}; one inference thread; "
                f"{args.budget:g} s per latency loop.",
                markdown(rows, HEADER),
                markdown(floor_rows, ["example", "floor", "measured", "limit", ""]),
            ]
        )
        + "\n"
    )
    (args.out / "results.md").write_text(md)
    console.print(
        f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}; charts: "
        + ", ".join(r["chart"] for r in results.values()),
        soft_wrap=True,
        highlight=False,
    )
    if not summary["passed"]:
        console.print(
            "[red]floors missed[/]: "
            + "; ".join(f"{c['example']}: {c['floor']} ({c['value']})" for c in checks if not c["ok"])
        )
        return 1
    console.print("[green]all floors met[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
