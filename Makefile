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

.PHONY: demo test install slurm-up slurm-down clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml $(wildcard constraints-cpu.txt)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' $(PIP_FLAGS)
	@if $(BIN)/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then \
		if [ -n "$(CONSTRAINTS)" ]; then echo "error: CUDA packages were installed on a CPU install" >&2; exit 1; fi; fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/suite demo

# The SLURM dispatch tests run against a real local cluster, brought up here when this
# machine allows it (root + apt); elsewhere they are skipped with the reason, and on CI
# (CI=true) a cluster that cannot start is an error.
test: $(STAMP)
	@status=0; jobs/slurm/local-cluster up || status=$$?; \
	if [ $$status -eq 0 ]; then export SUITE_SLURM=1; \
	elif [ "$${CI:-}" = "true" ]; then echo "local SLURM cluster failed to start (exit $$status)" >&2; exit 1; \
	else export SUITE_SLURM_SKIP_REASON="local SLURM cluster unavailable (exit $$status)"; fi; \
	$(BIN)/python -m pytest -q

slurm-up:
	jobs/slurm/local-cluster up

slurm-down:
	jobs/slurm/local-cluster down

clean:
	rm -rf $(VENV) .pytest_cache runs
