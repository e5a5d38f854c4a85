#!/usr/bin/env bash
# PyTorch itself through PyTorch's manager, through ours and through the
# ceiling (answer-only-manager: answers every registration and keeps
# nothing, blocking or spinning 200 us after each answer; no manager can let
# PyTorch go faster), in one run: interleaved rounds of allocations with
# PyTorch's client (torch_alloc.py) and of the mp.Queue workload
# (queue_e2e.py), on an idle machine and, with --busy, while another process
# keeps one core busy. Prints medians and ratios to PyTorch's manager.
#
#   benches/torch/compare.sh [--busy] [--rounds N]
# Needs `cargo build --release -p libshm -p libshm-benches --bins` and the
# PyTorch peer (../shared/peers/torch-peer.sh); torch is never modified: each
# manager runs from a symlink overlay of the torch package.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
busy=0
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --busy) busy=1 ;;
    --rounds) rounds=$2; shift ;;
    *) echo "usage: $0 [--busy] [--rounds N]" >&2; exit 2 ;;
  esac
  shift
done
torch_dir=${LIBSHM_TORCH_DIR:-$(bash "$root/../shared/peers/torch-peer.sh")}
python=$(cd "$torch_dir/../../../.." && pwd)/bin/python
ours=$root/target/release/shm-manager
ceiling=$root/target/release/answer-only-manager
for binary in "$ours" "$ceiling"; do
  [ -x "$binary" ] || { echo "build it first: cargo build --release -p libshm -p libshm-benches --bins" >&2; exit 2; }
done
managers=(theirs ours ceiling ceiling-spin)

work=$(mktemp -d)
hog=
cleanup() { [ -n "$hog" ] && kill "$hog" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for who in "${managers[@]}"; do
  mkdir -p "$work/$who/torch/bin"
  for entry in "$torch_dir"/*; do
    [ "$(basename "$entry")" = bin ] || ln -s "$entry" "$work/$who/torch/"
  done
  for entry in "$torch_dir"/bin/*; do
    [ "$(basename "$entry")" = torch_shm_manager ] || ln -s "$entry" "$work/$who/torch/bin/"
  done
done
cp "$ours" "$work/ours/torch/bin/torch_shm_manager"
cp "$torch_dir/bin/torch_shm_manager" "$work/theirs/torch/bin/torch_shm_manager"
printf '#!/bin/sh\nexec "%s"\n' "$ceiling" > "$work/ceiling/torch/bin/torch_shm_manager"
printf '#!/bin/sh\nexec "%s" --spin 200\n' "$ceiling" > "$work/ceiling-spin/torch/bin/torch_shm_manager"
chmod +x "$work"/ceiling*/torch/bin/torch_shm_manager

if [ "$busy" = 1 ]; then
  # One core kept busy by another process for the whole run.
  ( while :; do :; done ) &
  hog=$!
fi

declare -A alloc queue
for round in $(seq 1 "$rounds"); do
  # Rotate the order each round, so drift hits all alike.
  order=()
  for k in "${!managers[@]}"; do order+=("${managers[$(((round + k) % ${#managers[@]}))]}"); done
  for who in "${order[@]}"; do
    alloc[$who]+="$(PYTHONPATH="$work/$who" "$python" "$root/std-shim/src/bin/shmctl/bench/torch_alloc.py" 4096 1000 3) "
    queue[$who]+="$(PYTHONPATH="$work/$who" "$python" "$here/queue_e2e.py" 3000 4096) "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
a_theirs=$(echo "${alloc[theirs]}" | median); q_theirs=$(echo "${queue[theirs]}" | median)
state=idle; [ "$busy" = 1 ] && state="one core busy"
echo "PyTorch through each manager ($state, $rounds interleaved rounds, medians; x = as fast as PyTorch's manager)"
printf '  %-13s %18s %7s %20s %7s\n' manager "allocation 4 KiB" "" "mp.Queue" ""
for who in "${managers[@]}"; do
  a=$(echo "${alloc[$who]}" | median); q=$(echo "${queue[$who]}" | median)
  printf '  %-13s %15s us %6sx %13s tensors/s %6sx\n' "$who" "$a" \
    "$(awk -v t="$a_theirs" -v o="$a" 'BEGIN {printf "%.2f", t / o}')" "$q" \
    "$(awk -v t="$q_theirs" -v o="$q" 'BEGIN {printf "%.2f", o / t}')"
done
for who in "${managers[@]}"; do
  echo "  rounds, $who: alloc [${alloc[$who]% }] queue [${queue[$who]% }]"
done
