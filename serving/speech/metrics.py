"""Speech metrics, rendered after the server's own on ``GET /metrics``::

modelstack_audio_seconds_total            counter   (seconds of audio transcribed)
modelstack_real_time_factor               histogram (compute seconds / audio seconds, per request)
modelstack_transcription_queue_depth      gauge     (requests accepted and not yet finished)
"""

from __future__ import annotations

import threading

from serving.metrics import Histogram

RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class SpeechMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.audio_seconds = 0.0
        self.depth = 0
        self._rtf = Histogram(RTF_BUCKETS)

    def queued(self, change: int) -> None:
        with self._lock:
            self.depth += change

    def transcribed(self, audio_seconds: float, compute_seconds: float) -> None:
        with self._lock:
            self.audio_seconds += audio_seconds
            if audio_seconds > 0:
                self._rtf.observe(compute_seconds / audio_seconds)

    def render(self) -> list[str]:
        with self._lock:
            return [
                "# HELP modelstack_audio_seconds_total Seconds of audio transcribed.",
                "# TYPE modelstack_audio_seconds_total counter",
                f"modelstack_audio_seconds_total {self.audio_seconds!r}",
                "# HELP modelstack_real_time_factor Compute seconds per second of audio, per request.",
                "# TYPE modelstack_real_time_factor histogram",
                *self._rtf.render("modelstack_real_time_factor"),
                "# HELP modelstack_transcription_queue_depth Transcriptions accepted and not finished.",
                "# TYPE modelstack_transcription_queue_depth gauge",
                f"modelstack_transcription_queue_depth {self.depth}",
            ]
