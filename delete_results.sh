#!/usr/bin/env bash
# Start the search over: delete the per-model result files and the pickled trials (asks first).
set -eu
cd "$(dirname "$0")"
read -r -p "Delete results/*.txt.json and results.pkl? [y/N] " answer
[ "$answer" = y ] || [ "$answer" = Y ] || { echo "Nothing deleted."; exit 0; }
find results -maxdepth 1 -name '*.txt.json' -delete
rm -f results.pkl
echo "Deleted. The next run of hyperopt_optimize.py starts a new search."
