#!/usr/bin/env bash
# Builds the rig's binaries from pinned Go modules (through the Go module proxy) and caches them in
# ~/.cache/bpl-rig/bin: kube-apiserver + kubectl (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3),
# helm (helm.sh/helm/v3). Each binary has a stamp file (bin/.<name>.stamp) holding the version it was
# built from; a build is skipped when the binary and a matching stamp exist.
#
# Cluster parts (scripts/rig up --cluster): kubelet, kube-controller-manager, kube-scheduler, kube-proxy
# from the same k8s.io/kubernetes module set (target `node`, stamps as above), a static `pause` binary
# built with the C compiler (target `pause`), and containerd, runc, the CNI plugins and iptables from
# Debian's packages (target `packages`: apt-get, only what is missing, only as root).
#
# Usage: scripts/rig-build.sh [all|k8s|node|pause|packages|etcd|helm]...   (default: all)
# Env:   RIG_CACHE (default ~/.cache/bpl-rig), RIG_K8S_VERSION (v1.36.3), RIG_ETCD_VERSION (v3.6.16),
#        RIG_HELM_VERSION (v3.21.4), RIG_FORCE_BUILD=1 to rebuild anyway.
# A pinned version the proxy does not serve falls back to the newest one it serves in the same minor line.
set -euo pipefail

RIG_CACHE="${RIG_CACHE:-$HOME/.cache/bpl-rig}"
BIN="$RIG_CACHE/bin"
SRC="$RIG_CACHE/src"
K8S_VERSION="${RIG_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${RIG_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${RIG_HELM_VERSION:-v3.21.4}"

log() { printf '[rig build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

for d in /usr/local/go/bin "$HOME/go/bin" "$HOME/.local/go/bin"; do
  [[ -x "$d/go" ]] && PATH="$d:$PATH"
done
export PATH
command -v go >/dev/null || { echo "rig build: Go toolchain not found (need Go >= 1.26)" >&2; exit 1; }

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off
# Kubernetes 1.36 needs Go >= 1.26. An older local Go (>= 1.21) may fetch the toolchain module from
# the Go module proxy; otherwise stay on the local toolchain.
gov=$(go env GOVERSION 2>/dev/null || echo go0); gov=${gov#go}
if [[ "$(printf '%s\n' "$gov" 1.26 | sort -V | head -1)" == 1.26 ]]; then
  export GOTOOLCHAIN=local
else
  log "local Go $gov < 1.26: letting go fetch the go.mod toolchain"
  export GOTOOLCHAIN=auto
fi
mkdir -p "$BIN" "$SRC"


# up_to_date NAME VERSION -> 0 if $BIN/NAME exists and its stamp says VERSION
up_to_date() {
  [[ "${RIG_FORCE_BUILD:-}" != 1 && -x "$BIN/$1" && -f "$BIN/.$1.stamp" && "$(cat "$BIN/.$1.stamp")" == "$2" ]]
}
stamp() { printf '%s\n' "$2" >"$BIN/.$1.stamp"; }

# resolve MODULE WANTED: prints WANTED if the proxy serves it, else the newest served version of the
# same vMAJOR.MINOR line.
resolve() {
  local mod=$1 want=$2 line vers
  if go list -m "$mod@$want" >/dev/null 2>&1; then echo "$want"; return; fi
  line="${want%.*}."
  vers=$(go list -m -versions "$mod" | tr ' ' '\n' | grep -E "^${line//./\\.}[0-9]+$" | sort -V | tail -1 || true)
  [[ -n "$vers" ]] || { echo "rig build: no $line* version of $mod on the module proxy" >&2; return 1; }
  log "$mod $want not served; using $vers"
  echo "$vers"
}

# The version a previous build resolved (so that a cached build needs no network).
cached_or_resolve() { # NAME MODULE WANTED
  local name=$1 mod=$2 want=$3 f="$BIN/.$1.resolved.$3"
  if [[ -f "$f" ]]; then cat "$f"; return; fi
  local v; v=$(resolve "$mod" "$want"); echo "$v" >"$f"; echo "$v"
}

K8S_CONTROL=(kube-apiserver kubectl)
K8S_NODE=(kubelet kube-controller-manager kube-scheduler kube-proxy)

# build_k8s NAME...: builds the named k8s.io/kubernetes commands (default: kube-apiserver kubectl)
build_k8s() {
  local names=("$@"); [[ ${#names[@]} -gt 0 ]] || names=("${K8S_CONTROL[@]}")
  local v; v=$(cached_or_resolve kube-apiserver k8s.io/kubernetes "$K8S_VERSION")
  local todo=() n
  for n in "${names[@]}"; do up_to_date "$n" "$v" || todo+=("$n"); done
  if [[ ${#todo[@]} -eq 0 ]]; then log "${names[*]} $v cached"; return; fi
  local minor=${v#v1.}; minor=${minor%%.*}
  local staging="v0.${v#v1.}"            # v1.36.3 -> v0.36.3
  local dir="$SRC/k8s-$v"
  log "building ${todo[*]} $v (staging modules $staging) in $dir"
  mkdir -p "$dir"
  local gomod; gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$gomod" ]] || { echo "rig build: cannot download k8s.io/kubernetes@$v" >&2; return 1; }
  # Staging modules: every `k8s.io/<m> v0.0.0` require of k8s.io/kubernetes's own go.mod.
  local mods; mods=$(awk '
      /^require[[:space:]]*\(/ {inreq=1; next}
      inreq && /^\)/ {inreq=0; next}
      inreq && $1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}
      /^require[[:space:]]+k8s\.io\// && $3 == "v0.0.0" {print $2}' "$gomod" | sort -u)
  [[ -n "$mods" ]] || { echo "rig build: found no staging modules in $gomod" >&2; return 1; }
  local goline; goline=$(grep -m1 -E '^go [0-9]' "$gomod" || echo "go 1.26.0")
  local godebug; godebug=$(grep -m1 -E '^godebug ' "$gomod" || true)
  {
    echo "module bpl-rig/k8s"
    echo
    echo "$goline"
    [[ -n "$godebug" ]] && echo "$godebug"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    for m in $mods; do echo "	$m => $m $staging"; done
    echo ")"
  } >"$dir/go.mod"
  log "$(wc -w <<<"$mods") staging modules replaced"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local pkgs=(); for n in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  local out="$dir/out-$$"   # per build: two builds may share the module directory
  (cd "$dir" && go mod download k8s.io/kubernetes \
     && go build -trimpath -ldflags "$ld" -o "$out/" "${pkgs[@]}")
  for n in "${todo[@]}"; do
    install -m 0755 "$out/$n" "$BIN/"
    if [[ $n != kubectl ]]; then
      "$BIN/$n" --version | grep -q "$v" || { echo "rig build: $n version stamp wrong" >&2; return 1; }
    fi
    stamp "$n" "$v"
  done
  rm -rf "$out"
  log "${todo[*]} $v done"
}

# The sandbox ("pause") container's process: sleeps, reaps children, exits on SIGINT/SIGTERM.
PAUSE_C='#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void die(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0};
  a.sa_handler = die; sigaction(SIGINT, &a, 0); sigaction(SIGTERM, &a, 0);
  a.sa_handler = reap; a.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &a, 0);
  for (;;) pause();
}'
build_pause() {
  local v; v="c1-$(sha256sum <<<"$PAUSE_C" | cut -c1-12)"
  if up_to_date pause "$v"; then log "pause $v cached"; return; fi
  command -v cc >/dev/null || { echo "rig build: a C compiler (cc) is needed for pause" >&2; return 1; }
  local d; d=$(mktemp -d)
  printf '%s\n' "$PAUSE_C" >"$d/pause.c"
  cc -Os -static -s -o "$d/pause" "$d/pause.c"
  install -m 0755 "$d/pause" "$BIN/pause"
  rm -rf "$d"
  stamp pause "$v"
  log "pause $v done"
}

# Debian packages of the node: containerd (1.6 in bookworm), runc, CNI plugins, iptables + conntrack
# for kube-proxy, busybox (static) for the workload image of the demo. Installed only when missing, with apt-get, as root.
NODE_PKGS=(containerd:containerd runc:runc containernetworking-plugins:/usr/lib/cni/bridge
           iptables:iptables conntrack:conntrack busybox-static:/bin/busybox)
ensure_packages() {
  local need=() e pkg want
  for e in "${NODE_PKGS[@]}"; do
    pkg=${e%%:*}; want=${e#*:}
    if [[ $want == /* ]]; then [[ -x $want ]] || need+=("$pkg"); else command -v "$want" >/dev/null || need+=("$pkg"); fi
  done
  command -v nsenter >/dev/null || need+=(util-linux)
  command -v ip >/dev/null || need+=(iproute2)
  if [[ ${#need[@]} -eq 0 ]]; then log "node packages present"; return; fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "rig build: missing ${need[*]}: install them (Debian: apt-get install ${need[*]})" >&2; return 1
  fi
  log "installing ${need[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

build_etcd() {
  local v; v=$(cached_or_resolve etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION")
  if up_to_date etcd "$v"; then log "etcd $v cached"; return; fi
  local dir="$SRC/etcd-$v"
  log "building etcd $v in $dir"
  mkdir -p "$dir"
  local gomod; gomod=$(go mod download -json "go.etcd.io/etcd/server/v3@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  local goline; goline=$(grep -m1 -E '^go [0-9]' "$gomod" || echo "go 1.24")
  printf 'module bpl-rig/etcd\n\n%s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$goline" "$v" >"$dir/go.mod"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$dir/out/etcd" go.etcd.io/etcd/server/v3)
  install -m 0755 "$dir/out/etcd" "$BIN/etcd"
  "$BIN/etcd" --version | grep -q "${v#v}" || { echo "rig build: etcd version mismatch" >&2; return 1; }
  stamp etcd "$v"
  rm -rf "$dir/out"
  log "etcd $v done"
}

build_helm() {
  local v; v=$(cached_or_resolve helm helm.sh/helm/v3 "$HELM_VERSION")
  if up_to_date helm "$v"; then log "helm $v cached"; return; fi
  local dir="$SRC/helm-$v"
  log "building helm $v in $dir"
  mkdir -p "$dir"
  local gomod; gomod=$(go mod download -json "helm.sh/helm/v3@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  local goline; goline=$(grep -m1 -E '^go [0-9]' "$gomod" || echo "go 1.24")
  printf 'module bpl-rig/helm\n\n%s\n\nrequire helm.sh/helm/v3 %s\n' "$goline" "$v" >"$dir/go.mod"
  # Same stamps as helm's own Makefile: Kubernetes capabilities from the client-go it was built with.
  local cg kmaj kmin; cg=$(awk '$1=="k8s.io/client-go"{print $2; exit}' "$gomod")
  kmin=$(cut -d. -f2 <<<"$cg"); kmaj=1
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  if [[ -n "$kmin" ]]; then
    ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$kmaj -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kmin"
    ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kmaj -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kmin"
  fi
  (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$dir/out/helm" helm.sh/helm/v3/cmd/helm)
  install -m 0755 "$dir/out/helm" "$BIN/helm"
  "$BIN/helm" version --short | grep -q "$v" || { echo "rig build: helm version mismatch" >&2; return 1; }
  stamp helm "$v"
  rm -rf "$dir/out"
  log "helm $v done"
}

targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(all)
start=$SECONDS
for t in "${targets[@]}"; do
  case "$t" in
    all) build_k8s "${K8S_CONTROL[@]}" "${K8S_NODE[@]}"; build_etcd; build_helm; build_pause; ensure_packages ;;
    k8s|kube-apiserver|kubectl) build_k8s ;;
    node) build_k8s "${K8S_NODE[@]}"; build_pause; ensure_packages ;;
    pause) build_pause ;;
    packages) ensure_packages ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    *) echo "rig build: unknown target $t" >&2; exit 2 ;;
  esac
done
log "all done in $((SECONDS - start))s; binaries in $BIN"
