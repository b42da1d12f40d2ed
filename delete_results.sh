#!/usr/bin/env bash
# Start the search over: delete what the search wrote: result files, pictures and saved models in
# results/, the pickled trials, the TensorBoard logs. The dataset in ml_req/ stays.
#   ./delete_results.sh       asks first
#   ./delete_results.sh -y    deletes without asking (scripts, no terminal)
set -eu
cd "$(dirname "$0")"
what="results/* (result files, pictures, saved models), results.pkl and TensorBoard/"
case "${1:-}" in
  -y) ;;
  "")
    if [ ! -t 0 ]; then
      echo "Nothing deleted: no terminal to ask on. Run ./delete_results.sh -y to delete $what." >&2
      exit 1
    fi
    read -r -p "Delete $what? [y/N] " answer
    [ "$answer" = y ] || [ "$answer" = Y ] || { echo "Nothing deleted."; exit 0; } ;;
  *) echo "usage: ./delete_results.sh [-y]   (-y: delete $what without asking)" >&2; exit 2 ;;
esac
find results -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
rm -rf results.pkl TensorBoard
echo "Deleted. The next run of hyperopt_optimize.py starts a new search."
