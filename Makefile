# mmjax: `make demo` trains the main job on the embedded data; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmjax-installed
DEMO_DIR ?= runs/demo
# Tests run in 2 worker processes (the machine has 2 cores), spread test by test (tests sharing a module fixture
# stay together: tests/conftest.py); each sees one CPU device unless a test asks for more.
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: install demo test bench fast-malloc clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	# the CLIP BPE vocabulary (mmjax/data/clip_bpe.py finds it in this wheel; --no-deps: no torch)
	$(PY) -m pip install -q --no-deps open_clip_torch==3.3.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	rm -rf $(DEMO_DIR)
	$(PY) -m mmjax.main --config experiments/demo.py --workdir $(DEMO_DIR)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/clip_step.py

# Optional, Debian/Ubuntu as root: tcmalloc, which mmjax.main and the benchmarks then preload by themselves
# (mmjax/allocator.py: XLA's CPU train steps ~20 % faster). Nothing else needs it.
fast-malloc:
	apt-get install -y libtcmalloc-minimal4 || (apt-get update && apt-get install -y libtcmalloc-minimal4)

clean:
	rm -rf $(VENV) runs build *.egg-info
