# Shared by scripts/bench.sh, scripts/instructions.sh and scripts/pgo.sh (sourced, not run):
# the build, a free loopback port, waiting for a server to answer, the request bodies and the
# weir config they all run.

# Makes $TMP (removed on exit) and $PIDS (append every started process: PIDS+=($!); each is
# stopped on exit, Ctrl-C included).
bench_tmp() { # name
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}
bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}

# Builds the first-party plugins (wasm32-wasip2) and the given packages, in release.
bench_build() { # package...
    local packages=()
    for p in "$@"; do packages+=(-p "$p"); done
    if command -v rustup >/dev/null; then rustup target add wasm32-wasip2 >/dev/null 2>&1; fi
    cargo build -q --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release
    cargo build -q --release "${packages[@]}"
}

# Waits until URL answers HTTP at all (any status), for up to SECONDS (default 10).
wait_http() { # url [seconds]
    local tries=$(( ${2:-10} * 10 ))
    for _ in $(seq 1 "$tries"); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2; return 1
}

# A TCP port on 127.0.0.1 that is free right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Writes DIR/body.json, a 1,085-byte chat completion (system + user message, max_tokens,
# temperature), and DIR/body-stream.json, the same with "stream": true; DIR/body-anthropic.json
# and DIR/body-anthropic-stream.json are the same request in Anthropic's Messages shape.
bench_bodies() { # dir
    python3 - "$1" <<'PY'
import json, sys
def write(name, body):
    open(sys.argv[1] + "/" + name, "w").write(json.dumps(body, separators=(",", ":")))
system, user = "You are a helpful assistant.", "Summarise: " + "lorem ipsum dolor sit amet " * 34
msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
body = {"model": "bench-1", "messages": msgs, "max_tokens": 200, "temperature": 0.7}
write("body.json", body)
write("body-stream.json", dict(body, stream=True))
body = {"model": "bench-1", "system": system, "messages": msgs[1:], "max_tokens": 200, "temperature": 0.7}
write("body-anthropic.json", body)
write("body-anthropic-stream.json", dict(body, stream=True))
PY
}

# A weir config listening on PORT with one provider of KIND (default openai; the mock also
# speaks anthropic) in front of the mock upstream on MOCK_PORT (64 workers, queue 1024, no
# model discovery, no config watcher).
bench_weir_config() { # port mock-port wasm-cache-dir [kind]
    cat <<TOML
[server]
listen = "127.0.0.1:$1"
shutdown_timeout = "1s"

[admin]
watch = false

[plugin_runtime]
cache_dir = "$3"

[[providers]]
name = "mock"
kind = "${4:-openai}"
base_url = "http://127.0.0.1:$2/v1"
models = ["bench-1"]
discover_models = false

[providers.pool]
workers = 64
queue = 1024
TOML
}

# The [[plugins]] chain of the embedded default config (crates/config/src/default.toml): the
# first-party plugins embedded in the weir binary (`builtin:`), as a default `weir serve` runs.
bench_default_chain() {
    awk '/^\[\[plugins\]\]/{on=1} on' crates/config/src/default.toml
}

# The nginx binary (Debian's nginx-light keeps it in /usr/sbin, often not on PATH).
bench_nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

# Installs nginx from Debian when it is missing.
bench_install_nginx() {
    [ -x "$(bench_nginx_bin)" ] && return 0
    echo "==> installing nginx (baseline reverse proxy) from Debian" >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq nginx-light >/dev/null; fi
}

# Starts the baseline nginx (2 workers, keep-alive both ways, no buffering, no access log) on
# 127.0.0.1:PORT in front of the mock on MOCK_PORT, its files under DIR. Sets NGINX_PID (the
# master; its workers are its children) and appends it to PIDS.
bench_nginx() { # dir port mock-port
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<NGINX
worker_processes auto;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
    upstream mock { server 127.0.0.1:$3; keepalive 128; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGINX
    "$(bench_nginx_bin)" -p "$1" -c "$1/nginx.conf" -g 'daemon off;' >"$1/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}
