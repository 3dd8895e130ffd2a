# The two commands a new user runs (see README.md).
.PHONY: demo replay test bench

# Set up, then run the whole system on real footage (PETS09): broker, Redis, edge worker,
# central aggregator, loudspeakers and a webhook receiver; Ctrl-C stops it.
demo:
	@deploy/setup.sh --demo
	.venv/bin/perimeter demo

# Replay PETS09 once through the edge pipeline alone, with an annotated video.
replay:
	@deploy/setup.sh
	.venv/bin/perimeter replay --config config/pets09.yaml \
	  --alarms-out out/pets09-alarms.jsonl --annotate out/pets09-annotated.mp4

# Set up everything (Ultralytics back end and dev tools included), lint, type-check, test.
test:
	@deploy/setup.sh --full
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q -p no:cacheprovider

# Scored replays, then the randomised-zone evaluation and what each part of its rules buys.
bench:
	@deploy/setup.sh --full
	.venv/bin/python -m benchmarks.replay_bench
	.venv/bin/python -m benchmarks.random_zones --save-tracks out/zone-tracks
	.venv/bin/python -m benchmarks.zone_ablation --tracks out/zone-tracks
	.venv/bin/python -m benchmarks.detector_time
	.venv/bin/python -m benchmarks.detector_time --wide --frames 4
	.venv/bin/python -m benchmarks.small_targets
	.venv/bin/python -m benchmarks.night --tune
