# pcad: `make demo` runs the main job, `make test` the whole suite. Both install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pcad-installed
PYTHON ?= python3
TORCH  ?= torch==2.13.0

.PHONY: install demo test bench bench-generalization lint clean point-weights

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so'; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing libusb-1.0 (needed by open3d)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	  else \
	    echo "open3d needs the system library libusb-1.0: run 'sudo apt-get install libusb-1.0-0' (Debian/Ubuntu)"; \
	  fi; \
	fi
	@# Debian's chromium drives the browser test; vulkan lets Open3D render offscreen on the CPU.
	@if ! command -v chromium >/dev/null 2>&1 || ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and vulkan (browser test, offscreen rendering)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libvulkan1 mesa-vulkan-drivers >/dev/null; \
	  else \
	    echo "the browser test needs chromium (sudo apt-get install chromium); it is skipped otherwise"; \
	  fi; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# A CPU build of torch first, so that no CUDA build is pulled in as a dependency; pcad needs
	@# torch >= 2.10 (older unpicklers let a tampered run folder execute code, CVE-2025-32434).
	$(PY) -m pip install -q "$(TORCH)" || $(PY) -m pip install -q "torch>=2.10"
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: install
	$(VENV)/bin/pcad demo --out pcad-demo

# The tests and every docstring's `>>>` example in pcad, synth and viz (pyproject's testpaths).
test: install
	$(PY) -m pytest -q -n 2 -p no:cacheprovider --doctest-modules

bench: install
	$(PY) benchmarks/run.py --out benchmarks/results.json

# Every detector on datasets rendered from the shared real meshes (issue 12; hours on 2 cores).
# `make bench` runs it too (run.py runs every benchmarks/bench_*.py); the README table:
# $(PY) benchmarks/bench_generalization.py --table benchmarks/generalization.json
bench-generalization: install
	$(PY) benchmarks/run.py --only generalization --out benchmarks/generalization.json

lint: install
	$(VENV)/bin/ruff check pcad synth viz tests benchmarks data_scripts

# The Point-MAE checkpoint shipped as pcad's offline default (pcad/features/pointmae_pretrain.py
# documents it): 13 procedural parts x 8 seeds as STL, then masked point modelling on the CPU.
POINT_PARTS   := build/point-weights/parts
POINT_WEIGHTS := pcad/features/weights/pointmae_pcad_small.pth

point-weights: install
	rm -rf $(POINT_PARTS)
	$(PY) -c "from pathlib import Path; from synth.objects import list_objects, make_object; d = Path('$(POINT_PARTS)'); d.mkdir(parents=True); [make_object(n, seed=s, variation=0.05).export(d / f'{n}_{s}.stl') for n in list_objects() for s in range(8)]"
	$(VENV)/bin/pcad pretrain-points --data $(POINT_PARTS) --out $(POINT_WEIGHTS) --epochs 100 --seed 0 --num-group 128 --group-size 32 --trans-dim 192 --depth 6 --points 2048 --batch-size 8 --threads 2 --half --encoder-only

clean:
	rm -rf pcad-demo build *.egg-info
