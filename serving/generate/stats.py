"""The family's Prometheus series, rendered into ``/metrics`` beside the common ones.

modelstack_llm_time_to_first_token_seconds         histogram (queued + prompt + first token)
modelstack_llm_time_per_output_token_seconds       histogram (per request, after the first token)
modelstack_llm_e2e_request_seconds                 histogram (submitted -> last token)
modelstack_llm_prompt_tokens_total                 counter
modelstack_llm_generated_tokens_total              counter
modelstack_llm_requests_finished_total{reason}     counter (stop, length, cancelled, error, abort)
modelstack_llm_sequences_running / _waiting        gauges
modelstack_llm_kv_cache_tokens / _capacity         gauges (cells in use / allocated)
modelstack_llm_kv_cache_usage_ratio                gauge
"""

from __future__ import annotations

import threading

from serving.metrics import Histogram

TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GenerationStats:
    """Counters written by the decode thread, read by ``/metrics``; plain ints/floats under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ttft = Histogram(LATENCY_BUCKETS)
        self.tpot = Histogram(TOKEN_BUCKETS)
        self.e2e = Histogram(LATENCY_BUCKETS)
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.finish_reasons: dict[str, int] = {}
        self.running = 0
        self.waiting = 0
        self.kv_used = 0
        self.kv_capacity = 0
        self.decode_seconds = 0.0

    def step(self, tokens: int, sampled: int, seconds: float, prompt_tokens: int) -> None:
        with self._lock:
            self.decode_seconds += seconds
            self.prompt_tokens += prompt_tokens

    def finished(self, submitted: float, first: float, end: float, prompt: int, generated: int, reason: str) -> None:
        with self._lock:
            self.generated_tokens += generated
            self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + 1
            if reason not in ("stop", "length"):
                return
            self.e2e.observe(end - submitted)
            if first:
                self.ttft.observe(first - submitted)
                if generated > 1:
                    self.tpot.observe((end - first) / (generated - 1))

    def render(self) -> list[str]:
        with self._lock:
            lines = [
                "# HELP modelstack_llm_time_to_first_token_seconds Request submitted to its first token.",
                "# TYPE modelstack_llm_time_to_first_token_seconds histogram",
                *self.ttft.render("modelstack_llm_time_to_first_token_seconds"),
                "# HELP modelstack_llm_time_per_output_token_seconds Mean time per token after the first.",
                "# TYPE modelstack_llm_time_per_output_token_seconds histogram",
                *self.tpot.render("modelstack_llm_time_per_output_token_seconds"),
                "# HELP modelstack_llm_e2e_request_seconds Request submitted to its last token.",
                "# TYPE modelstack_llm_e2e_request_seconds histogram",
                *self.e2e.render("modelstack_llm_e2e_request_seconds"),
                "# HELP modelstack_llm_prompt_tokens_total Prompt tokens decoded.",
                "# TYPE modelstack_llm_prompt_tokens_total counter",
                f"modelstack_llm_prompt_tokens_total {self.prompt_tokens}",
                "# HELP modelstack_llm_generated_tokens_total Tokens generated (finished requests).",
                "# TYPE modelstack_llm_generated_tokens_total counter",
                f"modelstack_llm_generated_tokens_total {self.generated_tokens}",
                "# HELP modelstack_llm_requests_finished_total Generations ended, by reason.",
                "# TYPE modelstack_llm_requests_finished_total counter",
                *(
                    f'modelstack_llm_requests_finished_total{{reason="{r}"}} {n}'
                    for r, n in sorted(self.finish_reasons.items())
                ),
                "# HELP modelstack_llm_sequences_running Sequences in the decode batch.",
                "# TYPE modelstack_llm_sequences_running gauge",
                f"modelstack_llm_sequences_running {self.running}",
                "# HELP modelstack_llm_sequences_waiting Requests queued for a free sequence.",
                "# TYPE modelstack_llm_sequences_waiting gauge",
                f"modelstack_llm_sequences_waiting {self.waiting}",
                "# HELP modelstack_llm_kv_cache_tokens KV-cache cells holding running sequences' tokens.",
                "# TYPE modelstack_llm_kv_cache_tokens gauge",
                f"modelstack_llm_kv_cache_tokens {self.kv_used}",
                "# HELP modelstack_llm_kv_cache_capacity_tokens KV-cache cells allocated.",
                "# TYPE modelstack_llm_kv_cache_capacity_tokens gauge",
                f"modelstack_llm_kv_cache_capacity_tokens {self.kv_capacity}",
                "# HELP modelstack_llm_kv_cache_usage_ratio KV-cache cells in use over allocated.",
                "# TYPE modelstack_llm_kv_cache_usage_ratio gauge",
                f"modelstack_llm_kv_cache_usage_ratio {self.kv_used / self.kv_capacity if self.kv_capacity else 0.0!r}",
            ]
        return lines
