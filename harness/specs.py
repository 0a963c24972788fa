"""The specs of the deploy tests and the rollout benchmarks that stand a speech or a chat stack up,
written once: cut down for CI (a few clips or tokens for prep, one variant, a wide gate), since what
they test is the deploy, not the model."""

from __future__ import annotations

# Whisper tiny.en: 3 clips for prep; the gate is wide because 3 clips are a handful of words.
SPEECH = """\
name: whisper
model:
  path: model
  task: speech-recognition
data:
  calibration: data/evaluation.npz
  evaluation: data/evaluation.npz
optimize:
  metric: wer
  max_accuracy_drop: 0.2
  objective: fastest
  variants: [{variant}]
serving:
  port: 8501
  grpc_port: 8001
  threads: 1
  max_audio_seconds: 120
deploy:
  target: docker
  replicas: {replicas}
  cpus: 1.0
  memory: 1Gi
  bind_address: 127.0.0.1
  host_port: {port}
  ready_timeout: 180
"""

# The tiny GGUF (`modelprep.families.llm.tiny`) and the evaluation prose beside it.
CHAT_MODEL = """\
name: chat
model:
  path: model/tiny.gguf
data:
  calibration: data/evaluation.txt
  evaluation: data/evaluation.txt
"""
# ... served as given, 2,000 tokens for prep's KL measure.
CHAT = (
    CHAT_MODEL
    + """\
optimize:
  variants: [gguf-source]
  evaluation_tokens: 2000
serving:
  max_sequences: {sequences}
deploy:
  host_port: {port}
  ready_timeout: 120
"""
)


def speech_spec(variant: str = "ct2-int8", replicas: int = 1, port: int = 8501, grpc_port: int | None = None) -> str:
    """`grpc_port`: the host port the proxy publishes the V2 gRPC service on (None: not published)."""
    text = SPEECH.format(variant=variant, replicas=replicas, port=port)
    return text if grpc_port is None else text + f"  grpc_host_port: {grpc_port}\n"


def chat_spec(sequences: int = 2, port: int = 8501) -> str:
    return CHAT.format(sequences=sequences, port=port)
