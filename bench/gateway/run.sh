#!/usr/bin/env bash
# The gateway benchmark: wrk against the upstream directly, nginx (Debian's) and our
# gateway, all proxying the same upstream on this machine in one run, with the CPU
# time each proxy spent per request (utime+stime from /proc/PID/stat around each wrk
# run, nginx's workers summed); then both at a fixed rate (RATE req/s, latency from
# each request's due time: bench/gateway/fixedrate); then the gateway's primary
# latency with 100% shadow to an upstream that takes 200 ms, against the same without
# shadow. Everything listens on loopback and is stopped at the end.
#
#   bench/gateway/run.sh            # or: make bench-gateway
#   DURATION=20s CONNECTIONS=128 RATE=2000 bench/gateway/run.sh
#
# Needs Go, nginx and wrk (Debian: apt-get install nginx wrk).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
RATE=${RATE:-2000}
RATE_DURATION=${RATE_DURATION:-10s}
PORT_UPSTREAM=19001 PORT_SLOW=19002 PORT_NGINX=19080 PORT_GATEWAY=19081

cd "$(dirname "$0")/../.."
. bench/gateway/common.sh
for tool in nginx wrk go curl; do
	command -v "$tool" >/dev/null || { echo "bench-gateway needs $tool (Debian: apt-get install -y nginx wrk)" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/gateway" ./gateway
go build -o "$tmp/upstream" ./bench/gateway/upstream
go build -o "$tmp/fixedrate" ./bench/gateway/fixedrate

wait_up() { # url
	for _ in $(seq 100); do curl -fs -o /dev/null "$1" -X POST -d '{}' && return 0; sleep 0.1; done
	echo "$1 did not come up" >&2; return 1
}

"$tmp/upstream" -listen 127.0.0.1:$PORT_UPSTREAM & pids+=($!)
"$tmp/upstream" -listen 127.0.0.1:$PORT_SLOW -delay 200ms & pids+=($!)

# nginx as teams run it in front of model servers (bench/gateway/common.sh).
nginx_conf "$tmp/nginx" $PORT_UPSTREAM $PORT_NGINX
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" & pids+=($!)
nginx_pid=$!

MLRELEASE_GATEWAY_LISTEN=127.0.0.1:$PORT_GATEWAY MLRELEASE_GATEWAY_ADMIN_TOKEN=bench \
	"$tmp/gateway" 2>"$tmp/gateway.log" & pids+=($!)
gateway_pid=$!

route() { # candidate-url weight shadow
	curl -fsS -o /dev/null -X PUT -H 'Authorization: Bearer bench' \
		"http://127.0.0.1:$PORT_GATEWAY/admin/v1/models/bench" \
		-d "{\"champion\":{\"version\":\"1\",\"url\":\"http://127.0.0.1:$PORT_UPSTREAM\"},\"candidate\":{\"version\":\"2\",\"url\":\"$1\"},\"candidateWeight\":$2,\"shadowShare\":$3}"
}
# Every feature on: routing (half the requests to each variant, both the same fast
# upstream here) sticky by X-User-ID, predictions parsed and scored, feedback joined,
# per-variant metrics.
for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$PORT_GATEWAY/readyz" && break; sleep 0.1; done
route "http://127.0.0.1:$PORT_UPSTREAM" 50 0

post_lua "$tmp/post.lua"

direct=http://127.0.0.1:$PORT_UPSTREAM/invocations
viaNginx=http://127.0.0.1:$PORT_NGINX/models/bench/invocations
viaGateway=http://127.0.0.1:$PORT_GATEWAY/models/bench/invocations
wait_up "$direct"; wait_up "$viaNginx"; wait_up "$viaGateway"

# CPU from cpu_ticks (common.sh): nginx's workers count as its children.
HZ=$(getconf CLK_TCK)

# bench NAME URL [PID]: one wrk run; prints "NAME rps p50_ms p99_ms cpu_us_per_request"
# (the last 0 without a PID).
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
bench() {
	local out before=0 after=0
	[ -n "${3:-}" ] && before=$(cpu_ticks "$3")
	out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$tmp/post.lua" "$2")
	[ -n "${3:-}" ] && after=$(cpu_ticks "$3")
	if grep -q 'Non-2xx' <<<"$out"; then echo "$1: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
	local rps p50 p99 n
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
	p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
	n=$(awk '/requests in/ {print $1}' <<<"$out")
	printf '%s %s %s %s %s\n' "$1" "$rps" "$p50" "$p99" "$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.1f", t / hz / n * 1e6}')"
}

# fixed NAME URL: one fixed-rate run; prints "NAME p50_ms p99_ms p999_ms lag_p99_ms".
fixed() {
	local out
	out=$("$tmp/fixedrate" -url "$2" -rate "$RATE" -duration "$RATE_DURATION" -connections "$CONNECTIONS") ||
		{ echo "$1: fixed-rate run had errors: $out" >&2; exit 1; }
	awk -v name="$1" '{for (i=1; i<NF; i++) v[$i]=$(i+1); printf "%s %s %s %s %s\n", name, v["p50_ms"], v["p99_ms"], v["p999_ms"], v["lag_p99_ms"]}' <<<"$out"
}

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS round(s); fixed rate $RATE/s for $RATE_DURATION; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); $(nginx -v 2>&1); $(go version | cut -d' ' -f3)"
# Warm up connections and caches, then measure the three side by side, interleaved.
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$tmp/post.lua" "$viaGateway" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$tmp/post.lua" "$viaNginx" >/dev/null
results=()
for round in $(seq "$ROUNDS"); do
	results+=("$(bench direct "$direct")" "$(bench nginx "$viaNginx" "$nginx_pid")" "$(bench gateway "$viaGateway" "$gateway_pid")")
done
fixedResults=()
for round in $(seq "$ROUNDS"); do
	fixedResults+=("$(fixed nginx "$viaNginx")" "$(fixed gateway "$viaGateway")")
done

# Shadow: the candidate takes 200 ms and gets a copy of every request; the client
# always gets the champion's answer. Alternated with the same route without shadow.
for round in $(seq "$ROUNDS"); do
	route "http://127.0.0.1:$PORT_SLOW" 0 0
	results+=("$(bench gateway-no-shadow "$viaGateway")")
	route "http://127.0.0.1:$PORT_SLOW" 0 100
	results+=("$(bench gateway-shadow-100%-slow "$viaGateway")")
done
dropped=$(curl -fs "http://127.0.0.1:$PORT_GATEWAY/metrics" | awk '/^mlrelease_gateway_shadow_dropped_total/ {print $2}')
shadowed=$(curl -fs "http://127.0.0.1:$PORT_GATEWAY/metrics" | awk '/^mlrelease_gateway_requests_total.*mode="shadow"/ {s+=$2} END {print s+0}')

printf '%s\n' "${results[@]}" | awk -v dropped="${dropped:-0}" -v shadowed="$shadowed" '
	{ n[$1]++; rps[$1]+=$2; p50[$1]+=$3; p99[$1]+=$4; cpu[$1]+=$5; if (!($1 in seen)) { order[++k]=$1; seen[$1]=1 } }
	END {
		printf "\n%-26s %12s %10s %10s %14s\n", "target", "requests/s", "p50 ms", "p99 ms", "CPU us/request"
		for (i=1; i<=k; i++) { t=order[i]; printf "%-26s %12.0f %10.3f %10.3f %14s\n", t, rps[t]/n[t], p50[t]/n[t], p99[t]/n[t], (cpu[t] > 0 ? sprintf("%.1f", cpu[t]/n[t]) : "-") }
		d50=p50["direct"]/n["direct"]; d99=p99["direct"]/n["direct"]
		printf "\nthroughput gateway/nginx: %.2fx; CPU per request gateway/nginx: %.2fx\n", (rps["gateway"]/n["gateway"])/(rps["nginx"]/n["nginx"]), cpu["gateway"]/cpu["nginx"]
		printf "added over direct: nginx p50 +%.3f ms p99 +%.3f ms; gateway p50 +%.3f ms p99 +%.3f ms\n",
			p50["nginx"]/n["nginx"]-d50, p99["nginx"]/n["nginx"]-d99, p50["gateway"]/n["gateway"]-d50, p99["gateway"]/n["gateway"]-d99
		a=p99["gateway-no-shadow"]/n["gateway-no-shadow"]; b=p99["gateway-shadow-100%-slow"]/n["gateway-shadow-100%-slow"]
		printf "primary p99 with 100%% slow shadow vs without: %.3f ms vs %.3f ms (%+.1f%%); shadow copies sent %d, dropped %d\n", b, a, (b/a-1)*100, shadowed, dropped
	}'
printf '%s\n' "${fixedResults[@]}" | awk -v rate="$RATE" '
	{ n[$1]++; p50[$1]+=$2; p99[$1]+=$3; p999[$1]+=$4; lag[$1]+=$5 }
	END {
		printf "\nfixed rate %d req/s (latency from the due time)\n%-10s %10s %10s %10s %16s\n", rate, "target", "p50 ms", "p99 ms", "p99.9 ms", "sender lag p99"
		for (t in n) printf "%-10s %10.3f %10.3f %10.3f %16.3f\n", t, p50[t]/n[t], p99[t]/n[t], p999[t]/n[t], lag[t]/n[t]
		printf "fixed-rate p99 gateway - nginx: %+.3f ms\n", p99["gateway"]/n["gateway"] - p99["nginx"]/n["nginx"]
	}'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
