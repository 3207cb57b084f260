"""harness: an LLM evaluation and benchmarking harness."""

__version__ = "0.1.0"
