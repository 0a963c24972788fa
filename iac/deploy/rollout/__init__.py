"""Canary and shadow rollouts, the parts every target shares: the judged steps (`steps.py`), one window's
analysis (`analysis.py`), the replay of live requests to both versions (`replay.py`) and the progress
shown by `pulumi up` (`progress.py`). A target supplies how it routes and what it reads (`steps.Versions`)."""
