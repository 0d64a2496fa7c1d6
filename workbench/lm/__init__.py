"""Language models: procedural tasks, the CPU-built model zoo, SmolLM2 from its GGUF, the evaluation harness."""
