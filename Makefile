# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use. The CPU build of torch is installed first so that the
# `convert` extra does not pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[dev,convert]"
	touch $(STAMP)

.PHONY: demo test test-slow
demo: $(STAMP)
	$(VENV)/bin/python infer.py --input examples/standin_quadruped.png --out_dir out/demo

# pytest exits 5 when it collects nothing; that is not a failure of the code.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow $(ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc
