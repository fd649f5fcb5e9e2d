# Two entry points for a fresh machine: `make demo` and `make test`; `make app` serves the web app.
# Both create .venv on first use, with the exact versions of requirements/lock.txt (what CI
# passed on); pyproject.toml keeps the ranges for library users. `make lock` re-resolves.
# The CPU build of torch is installed first so that the `convert` extra does not pull a
# multi-GB CUDA build.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
TORCH := torch==2.13.0
# Some machines' pip config names a local index folder that lacks most projects, and pip says so
# once per package ("Location ... is ignored"): a hundred lines that hide real warnings.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --constraint $(LOCK) pip $(QUIET_PIP)
	$(VENV)/bin/pip install -q --constraint $(LOCK) $(TORCH) $(QUIET_PIP)
	$(VENV)/bin/pip install -q --constraint $(LOCK) -e ".[dev,convert,app]" $(QUIET_PIP)
	touch $(STAMP)

.PHONY: demo app test test-slow lock
demo: $(STAMP)
	$(VENV)/bin/python infer.py --input examples/standin_quadruped.png --out_dir out/demo

# The web app on http://127.0.0.1:7860 (ARGS: e.g. --ckpt DIR --port N; `animax-app --help`).
app: $(STAMP)
	$(VENV)/bin/animax-app $(ARGS)

# The linter first (pyproject.toml's [tool.ruff]), so the settings cannot rot. pytest exits 5 when
# it collects nothing; that is not a failure of the code. -rs lists skip reasons.
test: $(STAMP)
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/python -m pytest -q -rs $(ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -m slow $(ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

# Resolve pyproject.toml's ranges afresh in a throw-away venv and pin what was installed.
# Then run `make test` (it reinstalls from the new lock) before committing requirements/lock.txt.
lock:
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip $(QUIET_PIP)
	.venv-lock/bin/pip install -q $(TORCH) $(QUIET_PIP)
	.venv-lock/bin/pip install -q ".[dev,convert,app]" $(QUIET_PIP)
	mkdir -p requirements
	{ echo "# Exact versions of make demo / make test / CI (Python $$(.venv-lock/bin/python -c 'import platform; print(platform.python_version())'), $$(uname -m))."; \
	  echo "# Written by \`make lock\` from pyproject.toml's ranges; used as pip --constraint."; \
	  .venv-lock/bin/pip freeze --all --exclude animax; } > $(LOCK)
	rm -rf .venv-lock build
