#!/usr/bin/env bash
# External-driver run of the post100 and get100 mixes: hce serve, the
# minimal handler (hce load baseline) and wrk each in their own process on
# this machine, baseline and hce windows interleaved; prints each window and
# the median ratio (hce req/s / baseline req/s) per scenario.
#
#   testnet/load/wrk/run.sh [HCE_BINARY] [SECONDS_PER_WINDOW] [ROUNDS]
#
# Needs wrk (apt-get install wrk). Ports: $HCE_WRK_PORT (18080) for hce
# serve, $HCE_WRK_BASELINE_PORT (that + 10) for the baseline, served by
# $HCE_BASELINE (default HCE_BINARY). 16 users, 16 connections, 2 threads.
set -euo pipefail
HCE=${1:-hce}
SECS=${2:-4}
ROUNDS=${3:-5}
PORT=${HCE_WRK_PORT:-18080}
BPORT=${HCE_WRK_BASELINE_PORT:-$((PORT + 10))}
USERS=16
PASS=wrk-load-password
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

"$HCE" serve --addr "127.0.0.1:$PORT" --data "$dir/data" >"$dir/serve.log" 2>&1 &
pids+=($!)
"${HCE_BASELINE:-$HCE}" load baseline --addr "127.0.0.1:$BPORT" >"$dir/baseline.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
	sleep 0.2
done

# Accounts, their credentials and the get100 prefill (100 records each).
alphabet='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
: >"$dir/creds"
for i in $(seq 0 $((USERS - 1))); do
	email="wrk-$i@hce.invalid"
	name=$("$HCE" client --directory "http://127.0.0.1:$PORT/" --email "$email" --password "$PASS" register | awk '{print $2}')
	echo "$name Basic $(printf '%s:%s' "$name" "$PASS" | base64 -w0)" >>"$dir/creds"
	{
		printf '['
		for j in $(seq 0 99); do
			[ "$j" -gt 0 ] && printf ','
			pay=$(head -c 400 /dev/urandom | base64 -w0 | head -c 300)
			printf '{"id":"bm%d","sortindex":%d,"payload":"%s"}' "$j" "$j" "$pay"
		done
		printf ']'
	} >"$dir/prefill.json"
	"$HCE" client --directory "http://127.0.0.1:$PORT/" --email "$email" --password "$PASS" post bookmarks "$dir/prefill.json" >/dev/null
done

window() { # scenario url -> "req/s p99"
	wrk -t2 -c$USERS -d"${SECS}s" --latency -s "$here/$1.lua" "$2" -- "$dir/creds" 2>"$dir/wrk.err" |
		awk '/Requests\/sec:/{r=$2} /^ +99%/{p=$2} END{print r, p}'
	if [ -s "$dir/wrk.err" ]; then head -3 "$dir/wrk.err" >&2; fi
}

median() { sort -g | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "external driver: wrk -t2 -c$USERS, ${SECS}s windows, $ROUNDS rounds, $(nproc) cores, server $HCE"
for sc in post100 get100; do
	: >"$dir/ratios"
	for r in $(seq "$ROUNDS"); do
		read -r b bp < <(window "$sc" "http://127.0.0.1:$BPORT/")
		read -r h hp < <(window "$sc" "http://127.0.0.1:$PORT/")
		ratio=$(awk -v h="$h" -v b="$b" 'BEGIN{printf "%.1f", 100*h/b}')
		echo "$ratio" >>"$dir/ratios"
		printf '%-8s round %d: baseline %9.0f req/s (p99 %s)  hce %8.0f req/s (p99 %s)  %s%%\n' "$sc" "$r" "$b" "$bp" "$h" "$hp" "$ratio"
	done
	printf '%-8s median ratio %s%%\n' "$sc" "$(median <"$dir/ratios")"
done
