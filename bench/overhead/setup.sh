#!/usr/bin/env bash
# Installs what bench/overhead/run.py compares tiergate against; safe to run again.
#
#   bash bench/overhead/setup.sh
#
# - wrk (Debian), the load generator
# - LiteLLM proxy, litellm[proxy]==1.103.6, in its own virtualenv: bench/overhead/.venv-litellm
# - the Portkey gateway, @portkey-ai/gateway from npm: bench/overhead/.portkey
# Both folders are git-ignored (bench/overhead/.gitignore).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
litellm_version="1.103.6"
portkey_version="1.15.2"
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

if ! command -v wrk >/dev/null 2>&1; then
    echo "setup: installing wrk from Debian" >&2
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq wrk
fi
command -v taskset >/dev/null 2>&1 || {
    echo "setup: taskset is missing; install util-linux" >&2
    exit 1
}

venv="$here/.venv-litellm"
# found, not imported: importing the proxy takes ~10 s of CPU
venv_ok="import importlib.metadata as m, importlib.util as u, sys
sys.exit(m.version('litellm') != '$litellm_version' or not all(u.find_spec(n) for n in ('fastapi', 'uvicorn', 'backoff', 'orjson')))"
if ! "$venv/bin/python" -c "$venv_ok" >/dev/null 2>&1; then
    echo "setup: installing litellm[proxy]==$litellm_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "litellm[proxy]==$litellm_version"
fi

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "setup: \`$tool\` is missing; the Portkey gateway needs Node.js >= 18 (apt-get install nodejs npm)" >&2
        exit 1
    }
done
portkey="$here/.portkey"
# @hono/node-server from 1.14.2 on makes Portkey's streamed answers fail with `TypeError: immutable`
# (Portkey-AI/gateway issue 1389); Portkey asks for ^1.3.3, so pin it with an npm override.
hono_node_server="1.14.1"
installed_hono="$(node -p "require('$portkey/node_modules/@hono/node-server/package.json').version" 2>/dev/null || true)"
installed_portkey="$(node -p "require('$portkey/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || true)"
if [ "$installed_portkey" != "$portkey_version" ] || [ "$installed_hono" != "$hono_node_server" ]; then
    echo "setup: installing @portkey-ai/gateway@$portkey_version into $portkey" >&2
    mkdir -p "$portkey"
    cat > "$portkey/package.json" <<JSON
{
  "name": "tiergate-bench-portkey",
  "private": true,
  "dependencies": {"@portkey-ai/gateway": "$portkey_version"},
  "overrides": {"@hono/node-server": "$hono_node_server"}
}
JSON
    npm install --prefix "$portkey" --no-audit --no-fund --loglevel=error
fi

echo "setup: ok (wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), litellm $litellm_version, portkey $(node -p "require('$portkey/node_modules/@portkey-ai/gateway/package.json').version"))" >&2
