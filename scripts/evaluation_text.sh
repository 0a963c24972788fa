#!/usr/bin/env bash
# Regenerates modelprep/examples/texts/jargon-file-4.4.7.txt, the held-out prose the llm family is
# measured on, from Debian's `jargon-text` package (The Jargon File 4.4.7, Eric S. Raymond et al.,
# public domain: "to be freely used, shared, and modified"; see the package's copyright file).
# The essays only: chapters 1-12 and appendices A-C, one paragraph per line; the glossary is left
# out (mostly short definitions and cross-references). The committed file is what tests and
# `make llm` use; this script shows where it came from and checks it has not drifted.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$here/modelprep/examples/texts/jargon-file-4.4.7.txt}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download jargon-text=4.4.7-4.1 >/dev/null 2>&1) \
  || { echo "apt-get download jargon-text failed; run apt-get update first" >&2; exit 1; }
dpkg-deb -x "$work"/jargon-text_*.deb "$work/pkg"
zcat "$work/pkg/usr/share/doc/jargon-text/jargon.txt.gz" > "$work/jargon.txt"
python3 - "$work/jargon.txt" "$out" <<'PY'
import re, sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
def last(title):
    return max(i for i, line in enumerate(lines) if " ".join(line.split()) == title)
start, glossary, appendix = last("Chapter 1. Hacker Slang and Hacker Culture"), last("Glossary"), last("Appendix A. Hacker Folklore")
text = "\n".join(lines[start:glossary] + lines[appendix:])
paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
# Headings and list items are short; keep the prose.
prose = [p for p in paragraphs if len(p.split()) >= 12]
open(sys.argv[2], "w", encoding="utf-8").write("\n".join(prose) + "\n")
print(f"{sys.argv[2]}: {len(prose)} paragraphs, {sum(len(p) for p in prose):,} characters")
PY
