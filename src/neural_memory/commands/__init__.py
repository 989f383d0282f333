"""Subcommands of ``neural-memory``; one module per command, discovered by :mod:`neural_memory.cli`."""
