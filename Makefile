# The two commands a new user runs (see README.md).
.PHONY: demo test lint bench

# Set up, then replay real footage (PETS09) through the edge pipeline on embedded defaults.
demo:
	@deploy/setup.sh
	.venv/bin/perimeter replay --config config/pets09.yaml \
	  --alarms-out out/pets09-alarms.jsonl --annotate out/pets09-annotated.mp4

# Set up everything (Ultralytics back end and dev tools included), lint, type-check, test.
test:
	@deploy/setup.sh --full
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q -p no:cacheprovider

bench:
	@deploy/setup.sh --full
	.venv/bin/python -m benchmarks.replay_bench
