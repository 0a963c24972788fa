"""The `modelstack` command line: thin commands (`app.py`) over library functions, and how results are shown (`views.py`)."""
