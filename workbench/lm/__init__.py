"""Language models: procedural tasks, the CPU-built model zoo, SmolLM2 from its GGUF, the evaluation harness."""

from workbench.kernels.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.lm.tasks": ["TASKS", "Task", "get_task", "check_tasks", "heldout", "make_tokenizer"],
    "workbench.lm.models": ["load_model", "resolve_model", "cache_keyword"],
    "workbench.lm.zoo": ["ZooConfig", "Zoo", "build_zoo", "load_zoo", "total_steps"],
    "workbench.lm.evaluation": ["evaluate", "greedy", "exact_match", "StateDictEvaluator", "HeldoutSets",
                                 "test_sets"],
})
