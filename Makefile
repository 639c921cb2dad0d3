# cloudgym: `make test` (what CI runs) and `make demo` (the main job), each from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch that lies on this machine's disk; the library itself only asks for torch>=2.8.
TORCH_PIN ?= torch==2.13.0
# `make test` installs everything (ray's rllib extra pins gymnasium 1.2.2); `make demo` needs only `train`.
EXTRAS ?= train,dev,rllib
PYTEST_ARGS ?=
# A second venv on the newest gymnasium 1.x: ray's rllib extra pins gymnasium==1.2.2,
# so the main venv (EXTRAS=train,dev,rllib in CI) runs on 1.2.2 and this one on the newest.
LATEST_VENV ?= .venv-gym-latest

.PHONY: venv lint typecheck test test-main test-gymnasium-latest demo bench clean

$(VENV)/.installed-$(EXTRAS): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed-$(EXTRAS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy cannot follow setuptools' editable-install finder, so it reads the package
# through a tree of links laid out as installed: .typecheck/cloudgym/{envs,agents,baselines}.
typecheck: venv
	rm -rf .typecheck && mkdir -p .typecheck/cloudgym
	for f in cloudgym/*.py cloudgym/py.typed; do ln -s ../../$$f .typecheck/cloudgym/; done
	for d in envs agents baselines; do ln -s ../../$$d .typecheck/cloudgym/$$d; done
	ln -s ../../cloudgym/commands .typecheck/cloudgym/commands
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../setup.cfg -p cloudgym

# What CI runs: lint, types and the whole suite on gymnasium 1.2.2 (with RLlib), then the
# fast suite again on the newest gymnasium 1.x in a second venv without ray.
test: test-main test-gymnasium-latest

test-main: lint typecheck
	$(PY) -c "import gymnasium; print('gymnasium', gymnasium.__version__)"
	$(PY) -m pytest -q $(PYTEST_ARGS)

$(LATEST_VENV)/.installed-latest: setup.cfg pyproject.toml
	$(MAKE) venv VENV=$(LATEST_VENV) EXTRAS=train,dev
	$(LATEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "gymnasium>=1.0,<2"
	touch $@

# The fast tests on the newest gymnasium 1.x, without ray (the RLlib tests skip there).
test-gymnasium-latest: $(LATEST_VENV)/.installed-latest
	$(LATEST_VENV)/bin/python -c "import gymnasium; print('gymnasium', gymnasium.__version__)"
	$(LATEST_VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo:
	$(MAKE) venv EXTRAS=train
	$(PY) scripts/compare.py --out results/demo

bench: venv
	$(PY) scripts/bench.py --json results/bench.json

clean:
	rm -rf .typecheck results runs .pytest_cache .mypy_cache .ruff_cache $(LATEST_VENV)
