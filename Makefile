# make demo   prepare the machine, then run notebooks/01-syscall-dispatch.ipynb headless
# make test   prepare the machine, then run the test suite
# make test-unit  only tests/unit (no root, no kernel objects: any user)
# make docs   prepare the machine, then execute every notebook and render build/site/
# Every target prepares the machine first (`setup`); that step is idempotent
# and takes about a second once done.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# bcc (python3-bpfcc) is importable only by Debian's own Python: the venv
# must come from /usr/bin/python3, not from whatever python3 is first on PATH.
SYSTEM_PYTHON := /usr/bin/python3
VENV          := .venv
PY            := $(VENV)/bin/python
APT_PACKAGES  := python3-bpfcc bpftool linux-headers-amd64 clang llvm libbpf-dev python3-venv iproute2 graphviz
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS   ?=
DEMO          ?= notebooks/01-syscall-dispatch.ipynb
BROWSER_NB    ?= notebooks/04-events-into-dataframes.ipynb
# the whole browser run (server, chromium, every cell) is killed after this many seconds
BROWSER_LIMIT ?= 240

export DEBIAN_FRONTEND := noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup apt mounts headers demo test test-unit test-kernels kernel-tools docs browser browser-tools bench clean

help:
	@echo "make demo    run $(DEMO) headless (prepares the machine first)"
	@echo "make test    run the tests (prepares the machine first; PYTEST_ARGS=... passes through)"
	@echo "make test-unit  only tests/unit: no root, no kernel objects (needs $(VENV) only)"
	@echo "make docs    execute every notebook and render it to HTML under build/site/ (open build/site/index.html)"
	@echo "make browser check %%bpf cells (C highlighting, completion) and run $(BROWSER_NB) in JupyterLab in headless chromium; screenshots in build/browser/"
	@echo "make bench   run bench/*.py; fails when one misses its target"
	@echo "make test-kernels  the kernel-dependent tests here and on Debian's 6.1 and 6.12 in QEMU guests (slow: see README)"
	@echo "make setup   only prepare: apt packages, tracefs/bpffs, $(VENV), kernel headers"
	@echo "make clean   remove $(VENV) and build outputs"

setup: apt mounts $(VENV)/.installed headers

# Install the apt packages only if one is missing (apt-get update only then).
apt:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q '^install ok installed$$' \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q --no-install-recommends $$missing </dev/null; \
	fi

mounts:
	@grep -q '^[^ ]* /sys/kernel/tracing tracefs ' /proc/mounts \
	  || { echo "setup: mounting tracefs"; $(SUDO) mount -t tracefs nodev /sys/kernel/tracing; }
	@grep -q '^[^ ]* /sys/fs/bpf bpf ' /proc/mounts \
	  || { echo "setup: mounting bpffs"; $(SUDO) mount -t bpf bpf /sys/fs/bpf; }

$(PY): | apt
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	@echo "setup: installing bpfmagic with its test and docs extras into $(VENV) (a minute or two the first time)"
	$(PY) -m pip install -q -e '.[test,docs]'
	@# the JupyterLab extension (%%bpf cells as C): an editable install skips data files, so link
	@# it where JupyterLab looks, as `jupyter labextension develop` would
	@mkdir -p $(VENV)/share/jupyter/labextensions
	@ext=$(VENV)/share/jupyter/labextensions/bpfmagic-cells; [ -L "$$ext" ] || rm -rf "$$ext"; \
	  ln -sfn "$(CURDIR)/bpfmagic/labextension" "$$ext"
	@$(PY) -c "import bcc, pandas, ipywidgets, nbclient, myst_nb, sphinx_book_theme, tqdm" \
	  || { echo "setup: $(VENV) cannot import bcc or a dependency; run 'make clean setup'" >&2; exit 1; }
	@touch $@

# Merged kernel headers tree for BCC (cached; a no-op when already built).
# Same as `python -m bpfmagic.kernel.env`, without runpy's warning about the
# package importing bpfmagic.kernel.env before running it.
headers: $(VENV)/.installed
	@$(PY) -c 'import sys, bpfmagic.kernel.env as e; sys.exit(e.main())'
	@$(PY) -c 'import bpfmagic.backends.libbpf as b; print("setup: --core:", b.prepare_cache())'

demo: setup
	$(VENV)/bin/bpfmagic run $(DEMO)

test: setup
	$(PY) -m ruff check bpfmagic tests bench
	$(PY) -m ruff format --check bpfmagic tests bench
	$(PY) -m pytest -q --durations=15 tests $(PYTEST_ARGS)

# tests/unit only: no root, no kernel objects, no mounts (any user with the venv).
test-unit: $(VENV)/.installed
	$(PY) -m pytest -q --durations=15 tests/unit $(PYTEST_ARGS)

# Every notebook executed, then rendered by Sphinx (MyST-NB) to build/site/ (open
# build/site/index.html); a notebook that fails fails the build. Progress bars on a terminal.
docs: setup
	rm -rf build/site
	$(PY) -m bpfmagic.site --out build/site --reference docs/reference.md notebooks/*.ipynb

# Debian's chromium driven by Playwright (never `playwright install`: the
# system browser), JupyterLab in the venv; both installed only when missing.
browser-tools: setup
	@[ -x /usr/bin/chromium ] || { echo "setup: installing chromium"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium </dev/null; }
	@$(PY) -c "import jupyterlab, playwright" 2>/dev/null || { echo "setup: installing jupyterlab playwright"; \
	  $(PY) -m pip install -q jupyterlab playwright; }

# JupyterLab on 127.0.0.1 in headless chromium: a %%bpf cell is highlighted as C
# (bpfmagic/labextension) and Tab after `%bpf ` offers subcommands; $(BROWSER_NB)
# runs, its live view renders and its count grows; screenshots in build/browser/.
browser: browser-tools
	timeout -k 10 $(BROWSER_LIMIT) $(PY) tests/browser/run_browser.py --out build/browser $(BROWSER_NB)

# Other kernels in virtual machines: Debian's kernel images (bookworm's 6.1, and 6.12 from
# bookworm-security, which has 6.10's one tail-call counter per run across subprograms),
# QEMU, busybox (virtme-ng's initramfs) and virtme-ng, each installed only when missing.
KERNEL_PACKAGES := qemu-system-x86 linux-image-amd64 linux-image-6.12-amd64 busybox-static
kernel-tools: setup
	@missing=""; \
	for p in $(KERNEL_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q '^install ok installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing </dev/null; \
	fi
	@[ -x $(VENV)/bin/vng ] || { echo "setup: installing virtme-ng"; $(PY) -m pip install -q virtme-ng; }

test-kernels: kernel-tools
	$(PY) tests/kernels/matrix.py

# Every benchmark runs; the target fails if any of them failed or missed its target.
bench: setup
	@status=0; for f in bench/*.py; do \
	  [ -e "$$f" ] || continue; \
	  echo "== $$f"; $(PY) "$$f" || { echo "== $$f FAILED (exit $$?)"; status=1; }; \
	done; exit $$status

clean:
	rm -rf $(VENV) build notebooks/build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
