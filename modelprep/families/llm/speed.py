"""Time one GGUF the way it will serve: prompt and generation tokens/s and peak memory, in a child process.

A child process so that its peak resident memory is this model's alone (weights mapped and
touched, the KV cache for the configured context, llama.cpp's compute buffers) and not whatever
the prep process held before. Timings are llama.cpp's own counters (`llama_perf_context`):
prompt processing is the batched evaluation of the prompt, generation the one-token steps of
greedy decoding.

    python -m modelprep.families.llm.speed MODEL TEXT --context 2048 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

PROMPT_TOKENS = 128
NEW_TOKENS = 64


@dataclass(frozen=True)
class Speed:
    prompt_tokens_per_s: float
    generation_tokens_per_s: float
    prompt_tokens: int
    generated_tokens: int
    peak_rss_bytes: int
    context: int
    threads: int


def measure(
    model: Path,
    text: Path,
    *,
    context: int,
    threads: int,
    prompt_tokens: int = PROMPT_TOKENS,
    new_tokens: int = NEW_TOKENS,
    timeout: float = 900.0,
) -> Speed:
    """Run this module in a child process and read its one line of JSON."""
    cmd = [
        sys.executable,
        "-m",
        __spec__.name if __spec__ else "modelprep.families.llm.speed",
        str(model),
        str(text),
        "--context",
        str(context),
        "--threads",
        str(threads),
        "--prompt-tokens",
        str(prompt_tokens),
        "--new-tokens",
        str(new_tokens),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"timing {model.name} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return Speed(**json.loads(done.stdout.strip().splitlines()[-1]))


def peak_rss() -> int:
    """This process's peak resident memory since it exec'd. Not getrusage's ru_maxrss: Linux carries
    that across fork and exec, so a child of a 2 GB prep process would report 2 GB; VmHWM belongs to
    the memory map exec made."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no procfs: the best there is


def run(model: Path, text: Path, context: int, threads: int, prompt_tokens: int, new_tokens: int) -> Speed:
    import llama_cpp

    from modelprep.families.llm.evaluate import load

    llm = load(model, context=context, threads=threads, logits_all=False)
    ids = llm.tokenize(text.read_text(encoding="utf-8").encode("utf-8"), add_bos=False, special=False)
    prompt = ids[: min(prompt_tokens, context - new_tokens - 1)]
    for _ in zip(range(2), llm.generate(prompt[:8], temp=0.0, top_k=1)):  # warm-up: first-touch of weights and buffers
        pass
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    # Greedy decoding, never stopped early by an end-of-sequence token: always new_tokens steps.
    for _ in zip(range(new_tokens), llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0)):
        pass
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return Speed(
        prompt_tokens_per_s=round(perf.n_p_eval / max(perf.t_p_eval_ms, 1e-9) * 1000, 2),
        generation_tokens_per_s=round(perf.n_eval / max(perf.t_eval_ms, 1e-9) * 1000, 2),
        prompt_tokens=int(perf.n_p_eval),
        generated_tokens=int(perf.n_eval),
        peak_rss_bytes=peak_rss(),
        context=context,
        threads=threads,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("text", type=Path)
    parser.add_argument("--context", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    a = parser.parse_args()
    print(json.dumps(asdict(run(a.model, a.text, a.context, a.threads, a.prompt_tokens, a.new_tokens))))


if __name__ == "__main__":
    main()
