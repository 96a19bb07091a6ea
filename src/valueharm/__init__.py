"""valueharm: safety research on value-aligned LLMs."""

__version__ = "0.1.0"
