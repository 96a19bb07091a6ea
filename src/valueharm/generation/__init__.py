"""Generation: prompt methods applied to benchmarks, run by a backend (hf, vllm, openai) into the run store."""

from valueharm.generation import hf  # noqa: F401  (registers the "hf" backend)
