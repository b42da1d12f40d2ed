#!/usr/bin/env bash
# Start the search over: delete what the search wrote (asks first): result files, pictures and saved
# models in results/, the pickled trials, the TensorBoard logs. The dataset in ml_req/ stays.
set -eu
cd "$(dirname "$0")"
read -r -p "Delete results/* (result files, pictures, saved models), results.pkl and TensorBoard/? [y/N] " answer
[ "$answer" = y ] || [ "$answer" = Y ] || { echo "Nothing deleted."; exit 0; }
find results -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
rm -rf results.pkl TensorBoard
echo "Deleted. The next run of hyperopt_optimize.py starts a new search."
