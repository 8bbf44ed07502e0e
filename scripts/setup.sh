#!/usr/bin/env bash
# Sets up everything voxfleet needs on a fresh Debian 12 machine (as root), idempotently:
# apt packages, a virtualenv in .venv, llama-cpp-python built once into a wheel cache,
# the Python package with its pinned dependencies, and the website bundle from npm.
#   scripts/setup.sh          # what `voxfleet serve` needs
#   scripts/setup.sh --test   # plus what the test suite and the benchmarks need (chromium, espeak-ng,
#                             # sox, pytest; the test extra pulls in the ray and plots extras too)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

LLAMA_VERSION=0.3.36
WHEEL_CACHE=${VOXFLEET_WHEEL_CACHE:-$HOME/.cache/voxfleet/wheels}
VENV=$ROOT/.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# 1. System packages (only what is missing; apt-get update only when something is).
apt_pkgs=(cmake build-essential nodejs npm)
# coturn: the deployment tests start their own TURN server on loopback; openssl makes their
# certificates; systemd provides systemd-analyze to verify the generated unit.
(( WITH_TEST )) && apt_pkgs+=(chromium espeak-ng sox fonts-dejavu-core coturn openssl systemd postgresql)
missing=()
for p in "${apt_pkgs[@]}"; do
  case "$p" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    cmake) command -v cmake >/dev/null && continue ;;
    build-essential) command -v g++ >/dev/null && continue ;;
  esac
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if (( ${#missing[@]} )); then
  say "apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ " ${missing[*]} " == *" coturn "* ]] && systemctl is-active --quiet coturn 2>/dev/null; then
    systemctl disable --now coturn >/dev/null 2>&1 || true  # the package's own server is not needed
  fi
fi

# 2. Virtualenv.
if [[ ! -x $VENV/bin/python ]]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi

# 3. llama-cpp-python has no wheel on the registry: compile once (~8 min), keep the wheel.
#    GGML_NATIVE=OFF keeps the wheel portable across CPUs of the same architecture.
mkdir -p "$WHEEL_CACHE"
if ! ls "$WHEEL_CACHE"/llama_cpp_python-$LLAMA_VERSION-*.whl >/dev/null 2>&1; then
  say "building llama-cpp-python $LLAMA_VERSION (once; cached in $WHEEL_CACHE)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/pip" wheel -q --no-deps -w "$WHEEL_CACHE" "llama-cpp-python==$LLAMA_VERSION"
fi

# 4. The package and its dependencies (skipped when nothing changed since the last run).
extras=""
(( WITH_TEST )) && extras="[test]"
stamp=$VENV/.voxfleet-installed
want="$(sha256sum pyproject.toml | cut -c1-16)$extras"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  say "pip: installing voxfleet$extras"
  "$VENV/bin/pip" install -q --find-links "$WHEEL_CACHE" -e ".$extras"
  echo "$want" > "$stamp"
fi

# 5. Website bundle: the official Pipecat client libraries from npm, bundled by esbuild.
bundle=src/voxfleet/control/web/static/vendor/app.js
if [[ ! -f $bundle || web/package-lock.json -nt $bundle || -n "$(find web/src -newer "$bundle" -type f)" ]]; then
  say "web: npm ci && build"
  (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run -s build)
fi
say "setup done"
