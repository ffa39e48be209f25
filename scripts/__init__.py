"""The project's recipes and tools, a package: run them as ``python -m scripts.NAME`` from the repository root."""
