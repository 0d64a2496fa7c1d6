"""Transformer² (self-adaptive LLMs): SVF experts, their REINFORCE training and few-shot expert mixing by CEM.
The math follows the project spec (shared/specs/model-evolution.md §4) and the reference implementation
(SakanaAI/self-adaptive-llms).

    from workbench.experts import svf_decompose, svf_compose, mix_params, CEM, reinforce_loss
    U, S, Vh = svf_decompose(W)                       # reduced SVD in float32: W = U·diag(S)·Vh
    W2 = svf_compose(U, S, Vh, z, rescale=True)       # U·diag(S⊙z)·Vh·Σs/Σ(S⊙z); differentiable in z
    mixed = mix_params(params, alpha, keys)           # z′ = Σ_k α_k·p_k over RAW parameters (no sigmoid)
    cem = CEM(init_mean, init_std, pop=32, elite_ratio=0.2, bounds=(0.0, 1.0), seed=0)
    best = cem.tell(samples := cem.ask(), perf, tie_break=ll)
    loss = reinforce_loss(logits, token_ids, rewards)  # (1/B)·Σ −r·Σ_t log π (+ λ·KL(π_ref‖π_θ))

    svf = SVFModel(model, tokenizer)                  # SVD of every MLP matrix, cached on disk
    trainer = ExpertTrainer(svf, "sort", seed=0)      # REINFORCE: trainer.step(), trainer.validate()

    lora = LoRAModel(model, tokenizer, rank=4)          # peft LoRA on the same matrices: the same trainer
    run = train_expert(ExpertRunConfig(model="data/zoo/generalist", task="sort"), RunStore("runs"))
    run = run_adapt(AdaptConfig(model=..., experts=[...], target="brackets"), RunStore("runs"))

Modules: svf (decompose / compose / z = sigmoid(p)), mixing (mix_params), cem (CEM), reinforce (the loss),
model (SVFModel, expert files), train (rollouts, prompt formats, ExpertTrainer), lora (LoRAModel), run (expert
training runs, kind "experts"), adapt (the adaptation strategies on a mixed test set, kind "adapt"), report (the
spread over seeds), generalist (a zoo base SVF can improve), bench (`workbench bench experts`).
"""

from workbench.kernels.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.experts.svf": ["svf_decompose", "svf_compose", "z_from_params", "init_params", "INIT_VALUE",
                              "INIT_NOISE"],
    "workbench.experts.mixing": ["mix_params", "uniform_alpha", "DegenerateMixtureError", "RAW", "SIGMOID"],
    "workbench.experts.cem": ["CEM"],
    "workbench.experts.reinforce": ["reinforce_loss", "sequence_logprobs", "mean_token_logprobs", "kl_ref"],
    "workbench.experts.model": ["SVFModel", "svf_matrix_names", "save_expert", "load_expert", "default_cache_dir"],
    "workbench.experts.train": ["ExpertTrainer", "TrainConfig", "Rollouts", "rollout", "teacher_batch",
                                "score_shots", "format_prompt", "check_expert_task"],
    "workbench.experts.lora": ["LoRAModel"],
    "workbench.experts.run": ["ExpertRunConfig", "train_expert", "expert_file"],
    "workbench.experts.adapt": ["AdaptConfig", "run_adapt"],  # run_adapt: `adapt` names the module here
    "workbench.experts.generalist": ["build_generalist"],
})
