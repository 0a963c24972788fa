"""Import circles among the project's own modules: `make lint` fails while there is one.

A circle makes the order modules load in matter and ties two modules into one unit that neither can be
read, tested or moved without. grimp (the graph import-linter is built on) reads the imports; an import
a -> b is in a circle when b reaches a again. Imports under `if TYPE_CHECKING:` count too: a circle of
types is still two modules that cannot be understood apart.

    python scripts/import_cycles.py iac modelprep serving harness
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def circles(packages: list[str]) -> Iterator[tuple[str, ...]]:
    """Each circle once, as the modules along it (the first module repeated at the end)."""
    import grimp

    sys.path.insert(0, str(ROOT))  # this checkout's packages, not an installed copy
    graph = grimp.build_graph(*packages, exclude_type_checking_imports=False, cache_dir=None)
    seen: set[frozenset[str]] = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            circle = (importer, *back)
            if frozenset(circle) not in seen:
                seen.add(frozenset(circle))
                yield circle


def main(argv: list[str]) -> int:
    found = list(circles(argv or ["iac", "modelprep", "serving"]))
    for circle in found:
        print("import circle: " + " -> ".join(circle))
    if found:
        print(f"{len(found)} import circle(s): move what both sides need into a module that imports neither")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
