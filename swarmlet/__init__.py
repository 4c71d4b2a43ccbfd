"""swarmlet: a lightweight container orchestrator for plain Linux servers."""

__version__ = "0.1.0"
