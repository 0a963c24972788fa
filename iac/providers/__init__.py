"""Pulumi dynamic providers over the docker SDK (pulumi-docker's provider cannot be built here).

Pitfalls we design around (see DESIGN.md): providers are pickled into state, so they live in
this importable package, keep no module-level state and create docker clients inside methods;
`diff` lists `replaces` explicitly; preview runs only `diff`, which compares content hashes.
"""
