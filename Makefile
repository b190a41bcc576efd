# The two commands of the README:
#   make run    set up a fresh machine and run the default workflow (data -> models -> attacks -> report)
#   make test   set up and run the test suite (with chromium, slurm-wlm and munge from Debian)
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CORES ?= all

.PHONY: setup data browser slurm run test lint benchmark

setup:
	$(PYTHON) -m pip install -e ".[test]"

# Debian's Fashion-MNIST (IDX files under /usr/share/datasets/fashion-mnist).
data:
	@[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist)

# Debian's Chromium: the tests open the report as a page in a headless browser.
browser:
	@command -v chromium >/dev/null || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

# Debian's Slurm and munge: the test of profiles/slurm starts a one-node cluster with them.
slurm:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y slurm-wlm munge)

run: setup data
	$(PYTHON) -m snakemake --cores $(CORES)

test: setup data browser slurm
	$(PYTHON) -m pytest -v

lint:
	$(PYTHON) -m snakemake --lint --configfile configs/tiny.yaml
	$(PYTHON) -m snakefmt --check Snakefile rules/

benchmark:
	$(PYTHON) benchmarks/lightning_overhead.py
	bash benchmarks/default_workflow.sh
