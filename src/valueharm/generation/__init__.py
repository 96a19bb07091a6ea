"""Generation: prompt methods applied to benchmarks, run by a backend (hf, vllm, openai) into the run store."""

# Importing the backends registers them; none of them imports vLLM until a vLLM backend is built.
from valueharm.generation import hf, openai_backend, vllm_backend  # noqa: F401
