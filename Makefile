# The two entry points of the README (study, test). Both install what is missing first.
.PHONY: install study test test-fast docs notebooks bench bench-heads bench-train

install:
	@bash scripts/install.sh

study: install
	.venv/bin/mech-interp study

# The tests that run on either engine, run again in .venv-tl4 (TransformerLens 4.x: the transformer_bridge engine),
# with the language-model notebooks (01, 02), whose kernel is that environment's Python there.
ENGINE_TESTS = tests/test_engines.py tests/test_engine_parity.py tests/test_architectures.py tests/test_bad_input.py \
	tests/test_device_maps.py tests/test_notebook.py tests/test_heads_notebook.py tests/test_super_weights.py \
	tests/test_sink_window.py

# Every tier: unit, integration (tiny models), acceptance (real SmolLM2, ../shared/data, the notebook), on the
# default engine (.venv, TransformerLens 3.x); then the engine tests on the other one (.venv-tl4, 4.x).
test: install
	.venv/bin/python -m pytest -q
	.venv-tl4/bin/python -m pytest -q $(ENGINE_TESTS)

# Unit and integration tiers only (a few minutes): for the edit-test loop.
test-fast: install
	.venv/bin/python -m pytest -q -m "not acceptance"
	.venv-tl4/bin/python -m pytest -q -m "not acceptance" $(ENGINE_TESTS)

# The documentation site from docs/ into site/ (static; open site/index.html from disk). Warnings are errors.
docs: install
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

# The tutorial notebooks executed in place, so that they are stored with the outputs (PNG figures) the site renders.
# Minutes; run after changing a notebook or what it shows. tests/test_notebook*.py execute their own copies.
notebooks: install
	.venv/bin/python scripts/execute_notebooks.py

bench: install
	.venv/bin/python bench/bench_layer_stats.py

# The single-head sweep: restarted and batched vs one full forward per head (docs/studies/heads.md).
bench-heads: install
	.venv/bin/python bench/bench_head_sweep.py

# Training tokens/s: the TransformerLens variants vs plain PyTorch GPTs (docs/studies/training.md).
bench-train: install
	.venv/bin/python bench/bench_train.py
