# The two entry points of the README (study, test). Both install what is missing first.
.PHONY: install study test test-fast bench bench-heads bench-train

install:
	@bash scripts/install.sh

study: install
	.venv/bin/mech-interp study

# Every tier: unit, integration (tiny models), acceptance (real SmolLM2, ../shared/data, the notebook).
test: install
	.venv/bin/python -m pytest -q

# Unit and integration tiers only (a few minutes): for the edit-test loop.
test-fast: install
	.venv/bin/python -m pytest -q -m "not acceptance"

bench: install
	.venv/bin/python bench/bench_layer_stats.py

# The single-head sweep: restarted and batched vs one full forward per head (README, "The head study").
bench-heads: install
	.venv/bin/python bench/bench_head_sweep.py

# Training tokens/s: the TransformerLens variants vs plain PyTorch GPTs (README, "Training GPT-2 variants").
bench-train: install
	.venv/bin/python bench/bench_train.py
