"""NAMM (Neural Attention Memory Models, spec §3): learned KV-cache eviction for Hugging Face causal LMs.

    from workbench.namm import age_embedding, stft_magnitudes, ema_update, bam_scores, select_tokens, NAMMPolicy
    from workbench.namm import EvictionCache, forward, generate, FullCache, RecentWindow, H2O

    policy = NAMMPolicy(theta, n_layers, n_kv_heads, gqa_group, stats=None)  # θ: 4172 numbers; stats None: collect
    out = generate(model, input_ids, policy, n_up=64, max_new_tokens=32)     # eager attention, left-padded batches
    out.tokens, out.cache.log                                                # what every head kept, per step

Modules, one idea each: features (STFT, EMA, running statistics, age embedding), scorer (BAM and θ's layout),
select (equal-N selection), policy (the hook and NAMM), baselines (full, recent window + sinks, H2O), cache (the
evicting transformers Cache and its hooks), driver (chunked forward and greedy decoding), trace (what the explorer
page /namm shows: every eviction step of one prompt, per layer and head).
"""

from workbench.kernels.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.namm.features": ["age_embedding", "stft_magnitudes", "ema_update", "RunningStats", "hann_periodic",
                                "FEATURE_DIM", "GAMMA", "HOP", "N_FFT", "N_FREQ"],
    "workbench.namm.scorer": ["bam_scores", "unpack_theta", "check_theta", "offsets", "BAMParams", "LAYOUT",
                              "N_PARAMS"],
    "workbench.namm.select": ["select_tokens", "select_top", "masked_scores"],
    "workbench.namm.policy": ["EvictionPolicy", "NAMMPolicy", "Selection"],
    "workbench.namm.baselines": ["FullCache", "RecentWindow", "H2O"],
    "workbench.namm.cache": ["EvictionCache", "EvictionStep", "attached", "attention_modules", "check_model",
                             "check_n_up", "model_shape"],
    "workbench.namm.driver": ["forward", "generate", "Generation", "FirstChunks"],
    "workbench.namm.trace": ["Trace", "TraceConfig", "LayerStep", "record_trace", "retention", "cache_sizes",
                             "spectrogram", "ema_history", "score_table", "text_tokens", "text_html", "TEXT_CSS",
                             "agreement_sweep", "explorer_model", "warm_model", "make_policy", "random_theta",
                             "read_results", "load_saved_policy"],
    # tasks, training runs, policy files, kvpress (workbench.namm.press imports kvpress: not exported here), bench
    "workbench.namm.tasks": ["make_examples", "make_example", "score_answer", "check_task_names", "Example",
                             "TASKS"],
    "workbench.namm.evaluation": ["evaluate", "compare", "answer", "budget_policy", "kept_fraction", "Method",
                                "Result", "Answer"],
    "workbench.namm.models": ["load_eager_model", "load_tokenizer", "check_model_source", "tiny_llama"],
    "workbench.namm.saved": ["save_policy", "load_policy", "load_run_policy", "run_policy_file", "SavedPolicy"],
    "workbench.namm.train": ["NAMMTrainConfig"],
    "workbench.namm.run": ["train_namm"],
    "workbench.namm.oneshot": ["replay", "install_layer_masks"],
    "workbench.namm.bench": ["bench_namm", "BenchConfig"],
})
