# The two entry points of the README. Both install what is missing first.
.PHONY: install study test bench

install:
	@bash scripts/install.sh

study: install
	.venv/bin/mech-interp study

test: install
	.venv/bin/python -m pytest -q

bench: install
	.venv/bin/python bench/bench_layer_stats.py
