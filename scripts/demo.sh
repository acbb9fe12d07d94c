#!/usr/bin/env bash
# The operator end to end on the local rig (real kube-apiserver + EC2 emulator on 127.0.0.1):
#
#   scripts/demo.sh        (or `make demo`) rig up, build, install the CRD, start the operator in the
#                          background, apply examples/basic.yaml, wait for Ready, show the results
#   scripts/demo.sh stop   delete the demo object (the operator removes its endpoint and security
#                          group), then stop the operator
#
# Running it again is harmless: everything it does is idempotent, and a running demo operator is
# reused (restarted if the binary was rebuilt since it started).
# The operator logs to .rig/logs/operator-demo.log; its pid is in .rig/pids/operator-demo.pid.
# It watches only the namespace `default`, so it never races the operators that tests start for
# their own namespaces on the same rig.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RIG="${RIG_DIR:-$ROOT/.rig}"
PIDFILE="$RIG/pids/operator-demo.pid"
PORTFILE="$RIG/pids/operator-demo.port"
LOG="$RIG/logs/operator-demo.log"
NS=default
NAME=demo
CRD=bedrockprivatelinks.bedrock.privatelink.io
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug/bedrock-privatelink-operator"

if [[ -t 1 ]]; then B=$'\e[1m' N=$'\e[0m'; else B='' N=''; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

load_env() {
  [[ -f "$RIG/env" ]] || die "no $RIG/env: run scripts/rig up"
  set -a
  # shellcheck disable=SC1091
  source "$RIG/env"
  set +a
}

# The demo operator's pid, if it runs (pid file + live process that is our binary's `run`).
operator_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid cmd
  pid=$(cat "$PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *bedrock-privatelink-operator\ run\ * ]] || return 1
  echo "$pid"
}

stop_operator() {
  local pid i
  if ! pid=$(operator_pid); then
    rm -f "$PIDFILE" "$PORTFILE"
    return 0
  fi
  echo "stopping the demo operator (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "it did not stop in 20s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$PORTFILE"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

build() {
  step "cargo build (debug; the first build takes a few minutes)"
  cargo build -q --bin bedrock-privatelink-operator
  [[ -x "$BIN" ]] || die "no binary at $BIN (CARGO_TARGET_DIR=$TARGET_DIR)"
}

start_operator() {
  local pid port i
  if pid=$(operator_pid); then
    if [[ "$BIN" -nt "$PIDFILE" ]]; then
      echo "the binary was rebuilt since the demo operator started: restarting it"
      stop_operator
    else
      echo "the demo operator already runs (pid $pid, http://127.0.0.1:$(cat "$PORTFILE" 2>/dev/null || echo '?'))"
      return 0
    fi
  fi
  port=$(free_port)
  mkdir -p "$(dirname "$PIDFILE")" "$(dirname "$LOG")"
  printf '\n==== operator-demo start %(%Y-%m-%dT%H:%M:%S)T\n' -1 >>"$LOG"
  NO_COLOR=1 setsid "$BIN" run --http-addr "127.0.0.1:$port" --resync-seconds 60 --watch-namespaces "$NS" \
    </dev/null >>"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  echo "$port" >"$PORTFILE"
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "the operator exited; see $LOG"; }
    curl -sf --max-time 1 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "operator pid $pid; /healthz /readyz /metrics on http://127.0.0.1:$port; log $LOG"
}

cmd_up() {
  local t0=$SECONDS
  step "scripts/rig up (kube-apiserver + etcd + EC2 emulator on 127.0.0.1)"
  scripts/rig up >/dev/null
  scripts/rig status
  load_env
  build

  step "kubectl apply --server-side -f crds/"
  kubectl apply --server-side --force-conflicts -f crds/
  kubectl wait --for=condition=Established --timeout=30s "crd/$CRD" crd/bedrockprivatelinkgrants.bedrock.privatelink.io

  step "starting the operator in the background (watching namespace $NS)"
  start_operator

  step "kubectl apply -f examples/grant.yaml (the cluster admin lets namespace default use private DNS)"
  kubectl apply --server-side --force-conflicts -f examples/grant.yaml
  kubectl get bplgrant

  step "kubectl apply -f examples/basic.yaml (no vpcId, no subnets: discovered from the Nodes)"
  kubectl get nodes -o custom-columns='NODE:.metadata.name,ZONE:.metadata.labels.topology\.kubernetes\.io/zone,PROVIDER-ID:.spec.providerID'
  kubectl apply -f examples/basic.yaml

  step "kubectl wait --for=condition=Ready bpl/$NAME --timeout=120s"
  if ! kubectl -n "$NS" wait --for=condition=Ready "bpl/$NAME" --timeout=120s; then
    kubectl -n "$NS" describe bpl "$NAME" || true
    echo "--- operator log (tail)"
    tail -n 40 "$LOG" || true
    die "bpl/$NAME did not become Ready"
  fi

  step "kubectl get bpl -o wide"
  kubectl -n "$NS" get bpl -o wide

  step "kubectl describe bpl $NAME"
  kubectl -n "$NS" describe bpl "$NAME"

  step "kubectl get configmap $NAME-bedrock -o yaml (what a Deployment loads with envFrom)"
  kubectl -n "$NS" get configmap "$NAME-bedrock" -o yaml

  step "the endpoint's DNS names"
  kubectl -n "$NS" get bpl "$NAME" -o jsonpath='{range .status.endpoints[*]}{.service}: {.vpcEndpointId} ({.state}) in {.availabilityZones}{"\n"}{range .dnsNames[*]}  {@}{"\n"}{end}  private DNS: {.privateDnsName}{"\n"}{end}'

  step "done in $((SECONDS - t0))s"
  cat <<EOF
The operator keeps running in the background (pid $(cat "$PIDFILE"), log $LOG).
Look around:    set -a; source .rig/env; set +a
                kubectl get bpl,configmap -o wide
                kubectl get events --field-selector involvedObject.name=$NAME
                kubectl apply -f examples/workload-deployment.yaml --dry-run=server
Stop the demo:  scripts/demo.sh stop    (deletes bpl/$NAME, waits for its AWS cleanup, stops the operator)
Stop the rig:   make rig-down
EOF
}

cmd_stop() {
  local rig_up=1
  scripts/rig status >/dev/null 2>&1 || rig_up=0
  if ((rig_up)); then
    load_env
    if kubectl get crd "$CRD" >/dev/null 2>&1 && kubectl -n "$NS" get bpl "$NAME" >/dev/null 2>&1; then
      # The operator must run to remove the finalizer after it deleted the AWS resources.
      if ! operator_pid >/dev/null; then
        [[ -x "$BIN" ]] || build
        start_operator
      fi
      step "kubectl delete bpl $NAME (endpoint first, then the security group, then the finalizer)"
      kubectl -n "$NS" delete bpl "$NAME" --wait=true --timeout=120s
      if kubectl -n "$NS" get configmap "$NAME-bedrock" >/dev/null 2>&1; then
        echo "warning: configmap $NAME-bedrock is still there"
      else
        echo "configmap $NAME-bedrock removed"
      fi
    else
      echo "no bpl/$NAME in namespace $NS"
    fi
  else
    echo "the rig is not running: nothing to delete"
  fi
  step "stopping the demo operator"
  stop_operator
  echo "stopped. The rig is still up; stop it with: make rig-down"
}

case "${1:-up}" in
  up) cmd_up ;;
  stop) cmd_stop ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
