.PHONY: demo test bench lint

# The main job on embedded defaults (sets itself up).
demo:
	scripts/demo.sh

# The whole test suite (sets itself up).
test:
	scripts/test.sh

# Pipeline throughput table (after `make demo` or `make test` created .venv).
bench:
	.venv/bin/clothes-search bench pipeline --count 64 --batch-size 1 --batch-size 32

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
