# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
# Both create .venv if needed and install the project with the CPU torch pins.
PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
# CPU-only installs: keep torch on the local CPU wheel (see constraints-cpu.txt).
# On a GPU cluster with its own torch: make CONSTRAINTS= demo
CONSTRAINTS ?= constraints-cpu.txt
PIP_FLAGS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
export HF_HUB_OFFLINE := 1
export WANDB_SILENT := true

.PHONY: demo test install slurm-up slurm-down latex clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml $(wildcard constraints-cpu.txt)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' $(PIP_FLAGS)
	@if $(BIN)/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then \
		if [ -n "$(CONSTRAINTS)" ]; then echo "error: CUDA packages were installed on a CPU install" >&2; exit 1; fi; fi
	touch $(STAMP)

install: $(STAMP)

# The miniature paper ablation: five sweeps/demo/ sweeps (teacher first), 5 or 2 seeds, local
# executor, then the report in reports/demo/. Rerunning reuses every finished run.
demo: $(STAMP)
	$(BIN)/python -m jobs.demo

# The SLURM dispatch tests run against a real local cluster, brought up here when this
# machine allows it (root + apt); elsewhere they are skipped with the reason, and on CI
# (CI=true) a cluster that cannot start is an error.
test: $(STAMP)
	@$(MAKE) --no-print-directory latex || { [ "$${CI:-}" != "true" ] || exit 1; }
	@status=0; tools/slurm/local-cluster up || status=$$?; \
	if [ $$status -eq 0 ]; then export SUITE_SLURM=1; \
	elif [ "$${CI:-}" = "true" ]; then echo "local SLURM cluster failed to start (exit $$status)" >&2; exit 1; \
	else export SUITE_SLURM_SKIP_REASON="local SLURM cluster unavailable (exit $$status)"; fi; \
	$(BIN)/python -m pytest -q

# pdflatex + booktabs for the test that compiles the report's LaTeX tables (Debian's texlive,
# 17 packages, ~40 s), installed where this machine allows it (root + apt), like the SLURM
# cluster. Elsewhere that test is skipped with the reason; on CI (CI=true) it fails.
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended
latex:
	@if command -v pdflatex >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "pdflatex not installed and this machine cannot install it (needs root + apt-get)" >&2; exit 3; fi; \
	echo "installing pdflatex ($(TEX_PACKAGES))"; \
	apt-get update -qq >/tmp/suite-latex-apt.log 2>&1 && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES) \
		>>/tmp/suite-latex-apt.log 2>&1 || { tail -n 20 /tmp/suite-latex-apt.log >&2; exit 1; }

slurm-up:
	tools/slurm/local-cluster up

slurm-down:
	tools/slurm/local-cluster down

clean:
	rm -rf $(VENV) .pytest_cache runs
