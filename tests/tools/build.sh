#!/usr/bin/env bash
# Builds (once) the ecosystem tools the tests run, and prints the path of the one asked for:
#
#   tests/tools/build.sh ecotools     bpl-ecotools (this module: gopher-lua for Argo CD's health
#                                     script, cli-utils' kstatus), from go.mod/go.sum here
#   tests/tools/build.sh promtool     promtool, pinned in tests/tools/promtool/go.mod
#   tests/tools/build.sh cargo-deny   cargo-deny from crates.io (cargo install --locked)
#
# Each lands in ~/.cache/bpl-tools under a name keyed by a hash of what it is built from, so a
# warm machine skips the build; a lock keeps parallel tests from building the same tool twice.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${BPL_TOOLS_CACHE:-$HOME/.cache/bpl-tools}"
CARGO_DENY_VERSION=0.20.2
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:--mod=readonly}"
mkdir -p "$cache"

key() { (cd "$1" && shift && sha256sum "$@" | sha256sum | cut -c1-16); }

build() {
  local what=$1 out
  case "$what" in
    ecotools)
      out="$cache/bpl-ecotools-$(key "$here" go.mod go.sum $(cd "$here" && ls *.go))"
      [[ -x $out ]] && { echo "$out"; return; }
      (cd "$here" && go build -trimpath -o "$out.tmp" .) >&2
      ;;
    promtool)
      out="$cache/promtool-$(key "$here/promtool" go.mod go.sum)"
      [[ -x $out ]] && { echo "$out"; return; }
      echo "building promtool (a few minutes, once per machine)" >&2
      (cd "$here/promtool" && go build -trimpath -o "$out.tmp" github.com/prometheus/prometheus/cmd/promtool) >&2
      ;;
    cargo-deny)
      out="$cache/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny"
      [[ -x $out ]] && { echo "$out"; return; }
      echo "installing cargo-deny $CARGO_DENY_VERSION (a few minutes, once per machine)" >&2
      # Its own target dir: not the project's, whose CARGO_TARGET_DIR may be shared.
      CARGO_TARGET_DIR="$cache/cargo-deny-target" cargo install --locked --quiet \
        --root "$cache/cargo-deny-$CARGO_DENY_VERSION" --version "$CARGO_DENY_VERSION" cargo-deny >&2
      rm -rf "$cache/cargo-deny-target"
      echo "$out"; return
      ;;
    *) echo "unknown tool: $what (ecotools, promtool, cargo-deny)" >&2; exit 2 ;;
  esac
  mv "$out.tmp" "$out"
  echo "$out"
}

[[ $# -eq 1 ]] || { echo "usage: $0 ecotools|promtool|cargo-deny" >&2; exit 2; }
exec 9>"$cache/.lock-$1"
flock 9
build "$1"
