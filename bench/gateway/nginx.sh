# Sourced by run.sh and ab.sh: nginx as teams run it in front of model servers
# (upstream keepalive, HTTP/1.1, no access log: the gateway keeps no per-request log
# either), its files under DIR.
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
