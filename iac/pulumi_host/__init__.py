"""Running Pulumi programs with this project's Python: the language host and the plugin guard (see README.md)."""
