#!/usr/bin/env bash
# A/B of two gateway builds in one run: nginx, the gateway at REF and the gateway of the
# work tree, all proxying the same upstream, interleaved ROUNDS times (wrk -t2 -c64 with
# run.sh's POST, DURATION each), with each one's CPU time per request (utime+stime from
# /proc/PID/stat, nginx's workers summed). Every gateway feature is on, as in run.sh.
#
#   bench/gateway/ab.sh 7e2a63d~1          # the gateway before UpstreamTransport
#   ROUNDS=5 DURATION=10s bench/gateway/ab.sh main
#
# Run it under the machine's benchmark lock when others share it.
set -euo pipefail
REF=${1:?usage: bench/gateway/ab.sh GIT-REF}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
PORT_UPSTREAM=19001 PORT_NGINX=19080 PORT_A=19081 PORT_B=19082

cd "$(dirname "$0")/../.."
. bench/gateway/common.sh
tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/ref"
git archive "$REF" | tar -x -C "$tmp/ref"
(cd "$tmp/ref" && go build -o "$tmp/gateway-ref" ./gateway)
go build -o "$tmp/gateway" ./gateway
go build -o "$tmp/upstream" ./bench/gateway/upstream

"$tmp/upstream" -listen 127.0.0.1:$PORT_UPSTREAM & pids+=($!)
nginx_conf "$tmp/nginx" $PORT_UPSTREAM $PORT_NGINX
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" & pids+=($!)
nginx_pid=$!
MLRELEASE_GATEWAY_LISTEN=127.0.0.1:$PORT_A MLRELEASE_GATEWAY_ADMIN_TOKEN=bench "$tmp/gateway-ref" 2>/dev/null & pids+=($!)
ref_pid=$!
MLRELEASE_GATEWAY_LISTEN=127.0.0.1:$PORT_B MLRELEASE_GATEWAY_ADMIN_TOKEN=bench "$tmp/gateway" 2>/dev/null & pids+=($!)
new_pid=$!

for port in $PORT_A $PORT_B; do
	for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
	curl -fsS -o /dev/null -X PUT -H 'Authorization: Bearer bench' "http://127.0.0.1:$port/admin/v1/models/bench" \
		-d "{\"champion\":{\"version\":\"1\",\"url\":\"http://127.0.0.1:$PORT_UPSTREAM\"},\"candidate\":{\"version\":\"2\",\"url\":\"http://127.0.0.1:$PORT_UPSTREAM\"},\"candidateWeight\":50,\"shadowShare\":0}"
done
for _ in $(seq 50); do curl -fs -o /dev/null -X POST -d '{}' "http://127.0.0.1:$PORT_NGINX/models/bench/invocations" && break; sleep 0.1; done

post_lua "$tmp/post.lua"

HZ=$(getconf CLK_TCK)
bench() { # NAME PORT PID
	local a b out n
	a=$(cpu_ticks "$3")
	out=$(wrk -t2 -c64 -d"$DURATION" -s "$tmp/post.lua" "http://127.0.0.1:$2/models/bench/invocations")
	b=$(cpu_ticks "$3")
	if grep -q 'Non-2xx' <<<"$out"; then echo "$1: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
	n=$(awk '/requests in/ {print $1}' <<<"$out")
	printf '%s %s %s\n' "$1" "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" \
		"$(awk -v t=$((b - a)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.1f", t / hz / n * 1e6}')"
}

echo "wrk -t2 -c64 -d$DURATION, $ROUNDS round(s); gateway at $REF against the work tree ($(git describe --always --dirty)); $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for port in $PORT_NGINX $PORT_A $PORT_B; do
	wrk -t2 -c64 -d2s -s "$tmp/post.lua" "http://127.0.0.1:$port/models/bench/invocations" >/dev/null
done
printf '%-10s %12s %16s\n' target requests/s "CPU us/request"
for _ in $(seq "$ROUNDS"); do
	for r in "$(bench nginx $PORT_NGINX $nginx_pid)" "$(bench "ref" $PORT_A $ref_pid)" "$(bench "work-tree" $PORT_B $new_pid)"; do
		printf '%-10s %12s %16s\n' $r
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
