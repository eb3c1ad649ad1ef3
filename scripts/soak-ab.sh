#!/usr/bin/env bash
# Compare two gateway builds with the soak harness, alternating them so the
# machine's drift falls on both alike: A, B, A, B, ... On shared machines a
# single pair proves nothing; read the medians of several.
#
# Usage: scripts/soak-ab.sh REV_A REV_B [runs] [loadtest flags...]
#   REV_A, REV_B: git revisions (a commit, a branch, or "." for the working
#   tree). The harness is built once, from the working tree.
# Example: scripts/soak-ab.sh HEAD~1 . 3 -d 60s -rate 2000
# Each run's reports go to loadtest/out/ab/<A|B>-<n>; one line per run is
# printed: accepted msgs/s, gateway and harness CPU per delivery, the online
# end-to-end p50 and p99.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,13p "$0"; exit 2; }
rev_a=$1 rev_b=$2
runs=${3:-3}
shift $(($# < 3 ? $# : 3))
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'git worktree remove --force "$work/tree" 2>/dev/null || true; rm -rf "$work"' EXIT

build() { # build REV OUT
	if [ "$1" = . ]; then
		go build -o "$2" ./cmd/gateway
		return
	fi
	git worktree remove --force "$work/tree" 2>/dev/null || true
	git worktree add -q --detach "$work/tree" "$1"
	(cd "$work/tree" && go build -o "$2" ./cmd/gateway)
}
build "$rev_a" "$work/gw-A"
build "$rev_b" "$work/gw-B"
go build -o "$work/loadtest" ./loadtest

for i in $(seq "$runs"); do
	for v in A B; do
		out=loadtest/out/ab/$v-$i
		mkdir -p "$out"
		"$work/loadtest" -gateway-bin "$work/gw-$v" -out "$out" "$@" >"$out/stdout.txt" 2>&1 || true
		txt=$out/stdout.txt
		printf '%s %d: %s | %s | %s | %s\n' "$v" "$i" \
			"$(grep -o '[0-9]* accepted ([0-9]*/s)' "$txt" | tail -1)" \
			"gateway $(grep '^gateway ' "$txt" | grep -o '[0-9]* µs per delivered message' || echo '?')" \
			"harness $(grep '^harness ' "$txt" | grep -o '[0-9]* µs per delivered message' || echo '?')" \
			"$(grep -o 'online devices p50 [0-9.]*ms p99 [0-9.]*ms' "$txt" || echo 'no verdict: see '"$txt")"
	done
done
