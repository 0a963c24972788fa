"""Continuous batching over llama.cpp's own batch API, in one decode thread.

Each request is a ``Sequence`` with its own llama.cpp sequence id (a KV-cache stream) and its own
sampler chain (llama.cpp's: top-p, temperature, seeded distribution, or greedy). Every step the
thread admits waiting sequences while ids are free (the lowest first), drops cancelled ones (their
KV cells are removed at once), puts one token per decoding sequence and prompt chunks of new ones
into a single ``llama_batch`` in sequence-id order, calls ``llama_decode`` once and samples each sequence's next token. So a
request joins the running ones at the next step and leaves when it is done; nothing here
re-implements sampling, the KV cache or batching — llama.cpp does those.

Results go back to the event loop with one ``call_soon_threadsafe`` per step (all sequences'
pieces together), so the asyncio front end only formats and writes.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import heapq
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serving.errors import ClientError
from serving.generate import cpu_wait as cpu_wait_policy
from serving.generate.stats import GenerationStats

if TYPE_CHECKING:
    from serving.config import ServingConfig
    from serving.metrics import Metrics

# Tokens per llama_decode call (prompt chunks + one per decoding sequence), as llama-server's
# defaults: a logical batch of 2048 computed in physical batches of 512.
N_BATCH = 2048
N_UBATCH = 512
PREFILL_CHUNK = N_UBATCH  # prompt tokens per step, with the decoding sequences' tokens
RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed
KV_UNIFIED = False  # a KV stream per sequence (see Engine.__init__); benchmarks flip it


@dataclass(frozen=True)
class Sampling:
    """What a request asks of the sampler and the stop conditions (validated by ``params``)."""

    max_tokens: int | None = None  # None: until the context is full
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


# (text, finish_reason or None, prompt tokens, completion tokens); called on the event loop.
Sink = Callable[[str, "str | None", int, int], None]


@dataclass(eq=False)
class Sequence:
    """One request being generated: its prompt, sampler, text so far and timings."""

    prompt: list[int]
    sampling: Sampling
    sink: Sink
    submitted: float = field(default_factory=time.perf_counter)
    slot: int = -1  # the llama.cpp sequence id while running
    fed: int = 0  # prompt tokens already decoded
    generated: int = 0
    last: int = -1  # the last sampled token, decoded in the next step
    cancelled: bool = False
    finished: bool = False
    first_token_at: float = 0.0
    sampler: Any = None
    _decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    _pending: str = ""  # text held back while it could be the start of a stop sequence

    def add_piece(self, piece: bytes) -> tuple[str, bool]:
        """Text that may be sent now, and whether a stop sequence ended the generation."""
        self._pending += self._decoder.decode(piece)
        stops = self.sampling.stop
        if not stops:
            text, self._pending = self._pending, ""
            return text, False
        pending = self._pending
        found = [i for i in (pending.find(s) for s in stops) if i >= 0]
        if found:
            self._pending = ""
            return pending[: min(found)], True
        # Hold back the longest tail that could still grow into a stop sequence.
        hold = max(
            (k for s in stops for k in range(min(len(s) - 1, len(pending)), 0, -1) if pending.endswith(s[:k])),
            default=0,
        )
        cut = len(pending) - hold
        self._pending = pending[cut:]
        return pending[:cut], False

    def flush(self) -> str:
        """What is held back, at the end of a generation that no stop sequence ended."""
        text: str = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return text


class Engine:
    """A GGUF model, its context (KV cache for ``max_sequences`` x ``context_length`` tokens) and the decode thread."""

    def __init__(
        self,
        model_path: str,
        threads: int,
        max_sequences: int,
        context_length: int,
        max_queued: int,
        stats: GenerationStats | None = None,
        cpu_wait: str = "auto",
    ) -> None:
        # Spin or sleep at ggml's per-node barriers: before llama.cpp's library (and libgomp) loads.
        self.cpu_wait = cpu_wait_policy.apply(cpu_wait, threads)
        import llama_cpp as ll  # the runtime loads only for this family

        self._ll = ll
        _install_log(ll)
        ll.llama_backend_init()
        model_params = ll.llama_model_default_params()
        self.model = ll.llama_model_load_from_file(model_path.encode(), model_params)
        if not self.model:
            raise ValueError(f"llama.cpp cannot load {model_path!r} as a GGUF model")
        self.vocab = ll.llama_model_get_vocab(self.model)
        trained = int(ll.llama_model_n_ctx_train(self.model))
        self.context_length = min(context_length or trained, trained)
        self.max_sequences = max_sequences
        self.threads = threads
        self.warm_up_ms = 0.0
        params = ll.llama_context_default_params()
        params.n_ctx = self.context_length * max_sequences
        params.n_batch = N_BATCH
        params.n_ubatch = N_UBATCH
        params.n_seq_max = max_sequences
        params.n_threads = params.n_threads_batch = threads
        # A KV stream per sequence (llama-server's layout with --parallel N): each attends over its
        # own cells only. llama.cpp then cuts a step with split_equal(sequential): a physical batch
        # holds only sequences whose ids rise by one in batch order. So ids are handed out lowest
        # first and the batch is laid out in id order (_step); handed out last-freed-first and in
        # arrival order, a step of 8 decode tokens ran as 8 one-token passes over the weights
        # (docs/llm.md, benchmarks/llm_steps.py). One unified buffer avoids the split but makes
        # every token's attention scan every sequence's cells: +15-20% CPU per step at 8 x 256.
        params.kv_unified = KV_UNIFIED
        params.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise ValueError(f"llama.cpp cannot create a context of {params.n_ctx} tokens for {model_path!r}")
        self.context_length = min(self.context_length, int(ll.llama_n_ctx_seq(self.ctx)))
        self.memory = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(N_BATCH, 0, 1)
        self.template = ll.llama_model_chat_template(self.model, None)  # bytes or None
        self.max_queued = max_queued
        self.stats = stats or GenerationStats()
        self.stats.kv_capacity = self.context_length * max_sequences
        self._free = list(range(max_sequences))  # a heap: the lowest free id first
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._piece = ctypes.create_string_buffer(256)
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, config: ServingConfig) -> Engine:
        return cls(
            config.artifact,
            config.threads,
            config.max_sequences,
            config.context_length,
            config.max_queued_sequences,
            cpu_wait=config.cpu_wait,
        )

    # -- the lifecycle's calls (serving.state.Served) --

    def start(self, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        """On the loop thread, just before ready: answers go to ``loop``, series into ``metrics``."""
        self._loop = loop
        metrics.add_section(self.stats.render)

    async def drain(self) -> None:
        """The front end has stopped: wait for the sequences already accepted (their clients may be gone)."""
        while self.stats.running or self.stats.waiting:
            await asyncio.sleep(0.02)

    def ready_fields(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "cpu_wait": self.cpu_wait,
            "max_sequences": self.max_sequences,
            "context_length": self.context_length,
            "max_queued_sequences": self.max_queued,
            "warm_up_ms": round(self.warm_up_ms, 1),
        }

    # -- on the event loop --

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``, with the model's BOS when it wants one; special tokens parsed."""
        ll = self._ll
        data = text.encode("utf-8")
        size = len(data) + 2
        tokens = (ll.llama_token * size)()
        n = ll.llama_tokenize(self.vocab, data, len(data), tokens, size, True, True)
        if n < 0:
            tokens = (ll.llama_token * -n)()
            n = ll.llama_tokenize(self.vocab, data, len(data), tokens, -n, True, True)
        return list(tokens[:n])

    def chat_prompt(self, messages: list[tuple[str, str]]) -> str:
        """The messages in the model's chat template (from its GGUF metadata), ready for the answer."""
        from serving.generate.template import apply_template

        return apply_template(self._ll, self.template, messages)

    def submit(self, seq: Sequence) -> None:
        """Queue ``seq``; it joins the running sequences at the next step. 503 when the queue is full."""
        with self._cond:
            if self._stopping:
                raise ClientError(503, "the server is shutting down; retry shortly", headers=(("Retry-After", "1"),))
            if len(self._free) == 0 and len(self._waiting) >= self.max_queued:
                raise ClientError(
                    503,
                    f"{self.max_sequences} sequences are running and {len(self._waiting)} wait "
                    "(max_sequences, max_queued_sequences); retry shortly",
                    headers=(("Retry-After", "1"),),
                )
            self._waiting.append(seq)
            self.stats.waiting = len(self._waiting)
            self._cond.notify()

    def cancel(self, seq: Sequence) -> None:
        """Stop ``seq`` (its client left): the decode thread frees it before its next step."""
        with self._cond:
            seq.cancelled = True
            if seq in self._waiting:  # not started: give its queue place back now
                self._waiting.remove(seq)
                self.stats.waiting = len(self._waiting)
                self.stats.finished(seq.submitted, 0.0, time.perf_counter(), len(seq.prompt), 0, "cancelled")
            self._cond.notify()

    def warm_up(self) -> None:
        """One short greedy generation, so the first client does not pay for first-touch costs."""
        started = time.perf_counter()
        done = threading.Event()
        # Before the first request there is no event loop to deliver to: the sink runs inline.
        seq = Sequence(
            self.tokenize("Hello"),
            Sampling(max_tokens=2, temperature=0.0),
            lambda text, finish, *_: done.set() if finish else None,
        )
        with self._cond:
            self._waiting.append(seq)
            self._cond.notify()
        if not done.wait(120):
            raise RuntimeError("the warm-up generation did not finish within 120 s")
        self.warm_up_ms = (time.perf_counter() - started) * 1000

    def close(self) -> None:
        """Stop the decode thread; sequences still running end with finish reason "abort"."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(10)

    # -- in the decode thread --

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._running:
                    self._cond.wait()
                if self._stopping:
                    self._abort_all()
                    return
                self._admit()
            if self._running:
                self._step()

    def _admit(self) -> None:
        """Free cancelled sequences' ids and KV cells; start waiting sequences while ids are free."""
        events: list[tuple[Sequence, str, str | None]] = []
        for seq in [s for s in self._running if s.cancelled]:
            self._release(seq)
            events.append((seq, "", "cancelled"))
        while self._waiting and self._free:
            seq = self._waiting.popleft()
            if seq.cancelled:
                continue
            seq.slot = heapq.heappop(self._free)
            seq.sampler = self._sampler(seq.sampling)
            self._running.append(seq)
        self._running.sort(key=lambda s: s.slot)  # the batch goes in id order
        stats = self.stats
        stats.waiting = len(self._waiting)
        stats.running = len(self._running)
        if events:
            self._deliver(events)

    def _sampler(self, sampling: Sampling) -> Any:
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if sampling.temperature == 0.0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
            return chain
        if sampling.top_p < 1.0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(sampling.top_p, 1))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(sampling.temperature))
        seed = RANDOM_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed))
        return chain

    def _release(self, seq: Sequence) -> None:
        ll = self._ll
        ll.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
        if seq.sampler is not None:
            ll.llama_sampler_free(seq.sampler)
            seq.sampler = None
        self._running.remove(seq)
        heapq.heappush(self._free, seq.slot)
        seq.finished = True

    def _step(self) -> None:
        """One llama_decode over every running sequence; sample and hand out the new tokens."""
        ll = self._ll
        batch = self.batch
        n = 0
        sampled: list[tuple[Sequence, int]] = []  # (sequence, its row in the batch)
        # Every decoding sequence's token has a place; prompt chunks share what is left of one physical
        # batch, in id order: with several prompts waiting, the first ones finish (and stream) a step
        # or more before the last instead of all together after the whole prefill (chunked prefill).
        room = PREFILL_CHUNK - sum(1 for seq in self._running if seq.fed == len(seq.prompt))
        prompt_tokens = 0
        for seq in self._running:  # in id order: one physical batch spans consecutive ids
            if seq.fed == len(seq.prompt):
                pos = len(seq.prompt) + seq.generated - 1
                self._put(n, seq.last, pos, seq.slot, True)
                sampled.append((seq, n))
                n += 1
            elif room > 0:
                take = min(len(seq.prompt) - seq.fed, room)
                room -= take
                for i in range(seq.fed, seq.fed + take):
                    last = i == len(seq.prompt) - 1
                    self._put(n, seq.prompt[i], i, seq.slot, last)
                    if last:
                        sampled.append((seq, n))
                    n += 1
                seq.fed += take
                prompt_tokens += take
        batch.n_tokens = n
        started = time.perf_counter()
        status = ll.llama_decode(self.ctx, batch)
        now = time.perf_counter()
        self.stats.step(n, len(sampled), now - started, prompt_tokens)
        events: list[tuple[Sequence, str, str | None]] = []
        if status != 0:  # no KV room (cannot happen when sized as configured) or an abort
            for seq, _ in sampled:
                self._release(seq)
                events.append((seq, "", "error"))
            self._deliver(events)
            return
        for seq, row in sampled:
            token = ll.llama_sampler_sample(seq.sampler, self.ctx, row)
            if seq.generated == 0:
                seq.first_token_at = now
            finish: str | None = None
            if ll.llama_vocab_is_eog(self.vocab, token):
                finish, text = "stop", seq.flush()
            else:
                seq.generated += 1
                seq.last = token
                text, stopped = seq.add_piece(self._piece_of(token))
                if stopped:
                    finish = "stop"  # the stop sequence and what follows it are not sent
                elif (seq.sampling.max_tokens is not None and seq.generated >= seq.sampling.max_tokens) or len(
                    seq.prompt
                ) + seq.generated >= self.context_length:
                    finish, text = "length", text + seq.flush()
            if finish is not None:
                self._release(seq)
            events.append((seq, text, finish))
        self.stats.running = len(self._running)
        self.stats.kv_used = sum(len(s.prompt) + s.generated for s in self._running)
        self._deliver(events)

    def _put(self, i: int, token: int, pos: int, slot: int, logits: bool) -> None:
        batch = self.batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = slot
        batch.logits[i] = logits

    def _piece_of(self, token: int) -> bytes:
        buf = self._piece
        n = self._ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _deliver(self, events: list[tuple[Sequence, str, str | None]]) -> None:
        now = time.perf_counter()
        for seq, _, finish in events:
            if finish is not None:
                self.stats.finished(seq.submitted, seq.first_token_at, now, len(seq.prompt), seq.generated, finish)
        loop = self._loop
        if loop is None or loop.is_closed():
            _send(events)  # warm-up, before any request: no loop to hand over to
            return
        try:
            loop.call_soon_threadsafe(_send, events)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _abort_all(self) -> None:
        events: list[tuple[Sequence, str, str | None]] = []
        for seq in list(self._running):
            self._release(seq)
            events.append((seq, seq.flush(), "abort"))
        for seq in self._waiting:
            events.append((seq, "", "abort"))
        self._waiting.clear()
        if events:
            self._deliver(events)


def _send(events: list[tuple[Sequence, str, str | None]]) -> None:
    for seq, text, finish in events:
        if seq.cancelled and finish != "cancelled":
            continue
        seq.sink(text, finish, len(seq.prompt), seq.generated)


def _quiet(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's log: errors go to stderr, the rest is dropped (the server logs JSON events)."""
    if level >= _LOG_LEVEL_ERROR and text:
        sys.stderr.write(text.decode("utf-8", "replace"))


_LOG_LEVEL_ERROR = 4  # GGML_LOG_LEVEL_ERROR
_log_callback: Any = None  # the ctypes callback must outlive every call into llama.cpp


def _install_log(ll: Any) -> None:
    global _log_callback
    if _log_callback is None:
        _log_callback = ll.llama_log_callback(_quiet)
    ll.llama_log_set(_log_callback, ctypes.c_void_p())
