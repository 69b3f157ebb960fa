# Sourced by run.sh and ab.sh: what both benchmarks share.

# nginx as teams run it in front of model servers (upstream keepalive, HTTP/1.1, no
# access log: the gateway keeps no per-request log either), its files under DIR.
#
#   nginx_conf DIR UPSTREAM_PORT LISTEN_PORT   # writes DIR/nginx.conf
nginx_conf() {
	local dir=$1 upstream=$2 listen=$3
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $dir/body;
	proxy_temp_path $dir/proxy;
	fastcgi_temp_path $dir/fastcgi;
	uwsgi_temp_path $dir/uwsgi;
	scgi_temp_path $dir/scgi;
	upstream model { server 127.0.0.1:$upstream; keepalive 256; }
	server {
		listen 127.0.0.1:$listen;
		location /models/bench/ {
			proxy_pass http://model/;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
CONF
}

# post_lua FILE: wrk's script for the benchmarks' request, a JSON POST of one row
# with a routing key.
post_lua() {
	cat >"$1" <<'LUA'
wrk.method = "POST"
wrk.body = '{"dataframe_split": {"columns": ["alcohol", "malic_acid", "ash"], "data": [[13.2, 1.78, 2.14]]}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-User-ID"] = "user-42"
LUA
}

# cpu_ticks PID...: utime+stime of the processes and their children, in clock ticks.
cpu_ticks() {
	local pid all=() t=0
	for pid in "$@"; do all+=("$pid"); all+=($(ps -o pid= --ppid "$pid" 2>/dev/null || true)); done
	for pid in "${all[@]}"; do
		[ -r "/proc/$pid/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$t"
}
