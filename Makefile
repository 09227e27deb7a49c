.PHONY: demo test bench lint models

# The main job on embedded defaults (sets itself up).
demo:
	scripts/demo.sh

# Train the garment detector and embedder on the sample set (cached in data/models/).
models:
	scripts/setup.sh && scripts/train.sh

# The whole test suite (sets itself up).
test:
	scripts/test.sh

# Pipeline throughput table (after `make demo` or `make test` created .venv).
bench:
	.venv/bin/clothes-search bench pipeline --count 64 --batch-size 1 --batch-size 32

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports --no-cache
