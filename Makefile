# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: install demo test test-deps lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the registry's default torch build: torchvision and open-clip-torch load against it (CPU works too)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# What the tests need beyond Python packages: Xvfb for the viewer's on-screen smoke test.
test-deps:
	@command -v Xvfb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb >/dev/null; \
	  else echo "Xvfb missing and not root: the Xvfb smoke test will be skipped"; fi; }

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) test-deps lint
	$(PY) -m pytest -q

# Main job on the embedded defaults (until the ASAL searches land: renders of the three substrates).
demo: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/workbench render lenia --steps 256 --every 2 --out $(OUT)/lenia.mp4
	$(VENV)/bin/workbench render boids --steps 1000 --every 5 --out $(OUT)/boids.mp4
	$(VENV)/bin/workbench render plife --steps 1000 --every 10 --out $(OUT)/plife.mp4
	$(VENV)/bin/workbench render plife --steps 1000 --out $(OUT)/plife.png
	@echo "videos in $(OUT)/; a live window: $(VENV)/bin/workbench view lenia"

bench: $(STAMP)
	$(VENV)/bin/workbench bench substrates --json

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
