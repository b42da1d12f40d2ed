# hks: hyperparameter and architecture search for CNNs on CIFAR-100.
PYTHON ?= python3
TENSORBOARD_PORT ?= 6006
export PYTHONUNBUFFERED := 1

.PHONY: install_req run_hyperopt run_hyperopt_worker demo train_best report tensorboard test test-fast lint bench

install_req:  ## Python packages, and graphviz for the model pictures (apt-get on Debian/Ubuntu; elsewhere say how)
	@command -v dot >/dev/null || { \
	  if command -v apt-get >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -q && $$SUDO apt-get install -y -q graphviz; \
	  else echo "graphviz not installed: install it (e.g. brew install graphviz) for model_*.png; the search runs without it"; fi; }
	$(PYTHON) -m pip install -r requirements.txt

run_hyperopt:  ## the search, until Ctrl-C; run it again to resume (options: HKS_EPOCHS, HKS_MAX_EVALS, ...)
	$(PYTHON) hyperopt_optimize.py

# With MONGO_DB_HOST set, run_hyperopt queues the trials in MongoDB and workers train them (README: Many machines).
run_hyperopt_worker:  ## a MongoDB worker (env MONGO_DB_HOST, MONGO_DB_PORT, MONGO_DB_USER, MONGO_DB_PASSWORD, EXPERIMENT_NAME)
	$(PYTHON) hyperopt_worker.py

demo:  ## a tiny search (3 trials of 1 epoch on 2,000 images): a few minutes on a laptop CPU
	$(PYTHON) hyperopt_optimize.py --epochs 1 --max-evals 3 --train-subset 2000 \
		--results-dir results/demo --trials-file results/demo/results.pkl
	@echo "Demo results: results/demo/*.txt.json (sorted by accuracy: ls results/demo), trials: results/demo/results.pkl"

train_best:  ## retrain the best hyperspace found so far: full budget, TensorBoard on, model saved (see train.py --help)
	$(PYTHON) train.py --space best

report:  ## leaderboard of results/ and results.pkl, and the pictures, written to results/ (see report.py --help)
	$(PYTHON) report.py --models

# TensorBoard/ holds both: trials/ (every trial of results/ and results.pkl, for the HParams dashboard) and
# <model_name>/ (the per-epoch logs of --tensorboard and train.py). Without results it serves the logs alone.
tensorboard:  ## every trial in TensorBoard's HParams dashboard, and the --tensorboard logs, on http://127.0.0.1:6006 (TENSORBOARD_PORT=...)
	-$(PYTHON) report.py --tensorboard
	$(PYTHON) -m tensorboard.main --logdir TensorBoard --host 127.0.0.1 --port $(TENSORBOARD_PORT)

test:  ## the whole test suite, slow end-to-end tests included (as CI runs it)
	$(PYTHON) -m pytest -q -n 2 tests

test-fast:  ## the tests without the slow end-to-end runs: a few minutes, for everyday work
	$(PYTHON) -m pytest -q -n 2 -m "not slow" tests

lint:  ## ruff check (ruff.toml), as CI runs it
	$(PYTHON) -m ruff check .

bench:  ## the speed benchmarks (README, "Speed"): training throughput, then the search with and without pruning
	$(PYTHON) bench/throughput.py
	$(PYTHON) bench/search_efficiency.py
