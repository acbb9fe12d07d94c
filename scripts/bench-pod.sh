#!/usr/bin/env bash
# The operator as a pod under load (`make bench-pod`, or `BENCH_POD=1 make bench`): on the rig's
# node (scripts/rig up --cluster), the chart installed from the `image` profile build, N objects
# (default 1000, privateDns false, one namespace) applied at once, with the client-side EC2 limiter
# off as in the out-of-cluster bench (on, creation paces itself to AWS's CreateVpcEndpoint bucket:
# minutes for 1000); prints the time until all are
# Ready and the pod's memory as the kubelet sees it (cgroup v1 memory.usage_in_bytes, working set =
# usage - inactive file, the peak memory.max_usage_in_bytes) and the process's VmRSS / VmHWM, next
# to the target (<= 40 MiB, as out of cluster). Then deletes everything it made.
#   scripts/bench-pod.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-${BENCH_POD_OBJECTS:-1000}}
[[ -f .rig/cluster ]] || { echo "bench-pod: the rig has no node; run scripts/rig up --cluster" >&2; exit 1; }
set -a
# shellcheck disable=SC1091
source .rig/env
set +a
RUN=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')   # fresh names: an earlier run's may still be terminating
OP_NS=bpl-bench-op-$RUN
NS=bpl-bench-$RUN
RELEASE=bpl-bench
TARGET_MIB=40
log() { printf '[bench-pod %s] %s\n' "$(date +%T)" "$*" >&2; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

cleanup() {
  log "deleting the $N objects, then the release"
  # Not `--wait=true`: it was seen to wait on after the last object was gone.
  kubectl -n "$NS" delete bpl --all --wait=false >/dev/null 2>&1 || true
  for ((s = 0; s < 600; s++)); do
    [[ -z "$(kubectl -n "$NS" get bpl -o name 2>/dev/null)" ]] && break
    sleep 1
  done
  helm uninstall "$RELEASE" -n "$OP_NS" --wait >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" "$OP_NS" --wait=false >/dev/null 2>&1 || true
  kubectl delete bplgrant "bpl-bench-$RUN" --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT

image=$(RIG_IMAGE_PROFILE=${RIG_IMAGE_PROFILE:-image} scripts/rig image bench)
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
for ns in "$OP_NS" "$NS"; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
kubectl -n "$OP_NS" create secret generic rig-aws --from-literal=AWS_ACCESS_KEY_ID=testing \
  --from-literal=AWS_SECRET_ACCESS_KEY=testing --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Tenancy: the built-in default allows 5 endpoints per namespace; the bench namespace gets its own.
kubectl apply -f - >/dev/null <<EOF
apiVersion: bedrock.privatelink.io/v1alpha1
kind: BedrockPrivateLinkGrant
metadata: {name: bpl-bench-$RUN}
spec:
  namespaces: {names: [$NS]}
  vpcs: {clusterVpc: true}
  privateDns: false
  maxEndpointsPerNamespace: $N
EOF
values=$(mktemp)
cat >"$values" <<EOF
image: {repository: "${image%:*}", tag: "bench", pullPolicy: Never}
aws: {region: "$AWS_REGION", ec2EndpointUrl: "$RIG_POD_EC2_ENDPOINT", rateLimit: false}
watchNamespaces: [$NS]
extraEnv:
  - {name: AWS_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: rig-aws, key: AWS_ACCESS_KEY_ID}}}
  - {name: AWS_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: rig-aws, key: AWS_SECRET_ACCESS_KEY}}}
  - {name: AWS_EC2_METADATA_DISABLED, value: "true"}
EOF
log "helm install $RELEASE ($image)"
helm upgrade --install "$RELEASE" charts/bedrock-privatelink-operator -n "$OP_NS" -f "$values" --wait --timeout 180s >/dev/null
kubectl -n "$OP_NS" rollout restart deploy -l "app.kubernetes.io/instance=$RELEASE" >/dev/null
kubectl -n "$OP_NS" rollout status deploy -l "app.kubernetes.io/instance=$RELEASE" --timeout=120s >/dev/null
rm -f "$values"

pod=$(kubectl -n "$OP_NS" get pods -l "app.kubernetes.io/instance=$RELEASE" -o jsonpath='{.items[0].metadata.name}')
cid=$(kubectl -n "$OP_NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')
cid=${cid#containerd://}
pid=$(scripts/rig ctr task ls | awk -v c="$cid" '$1 == c { print $2 }')
[[ -n "$pid" ]] || { echo "bench-pod: no task for container $cid" >&2; exit 1; }
cg=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" { print $3 }' "/proc/$pid/cgroup")
log "pod $pod, pid $pid, cgroup $cg"

log "applying $N objects"
t0=$(date +%s.%N)
for ((i = 0; i < N; i++)); do
  printf -- '---\napiVersion: bedrock.privatelink.io/v1alpha1\nkind: BedrockPrivateLink\nmetadata: {name: b%04d, namespace: %s}\nspec: {privateDns: false}\n' "$i" "$NS"
done | kubectl apply --server-side -f - >/dev/null
t_sent=$(date +%s.%N)
ready=0
for ((s = 0; s < 900; s++)); do
  ready=$(kubectl -n "$NS" get bpl -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)
  ((ready >= N)) && break
  sleep 1
done
t1=$(date +%s.%N)
sleep 5   # let the status writes settle before reading memory

usage=$(cat "$cg/memory.usage_in_bytes")
peak=$(cat "$cg/memory.max_usage_in_bytes")
inactive=$(awk '$1 == "total_inactive_file" { print $2 }' "$cg/memory.stat")
rss=$(awk '$1 == "total_rss" { print $2 }' "$cg/memory.stat")
working=$((usage - inactive))
vmrss=$(awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$pid/status")
vmhwm=$(awk '/^VmHWM/ { print $2 * 1024 }' "/proc/$pid/status")
verdict() { awk -v v="$1" -v t="$TARGET_MIB" 'BEGIN { print (v / 1048576 <= t) ? "ok" : "OVER" }'; }

cat <<EOF

| operator pod, $N objects applied at once (image profile, node $RIG_NODE_NAME) | value | target |
| --- | --- | --- |
| objects Ready | $ready of $N | all |
| time until all Ready | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (applied in $(awk -v a="$t0" -v b="$t_sent" 'BEGIN { printf "%.1f", b - a }') s) | |
| pod working set (cgroup usage - inactive file) | $(mib "$working") MiB | <= $TARGET_MIB MiB ($(verdict "$working")) |
| pod cgroup usage / peak (memory.max_usage_in_bytes) | $(mib "$usage") / $(mib "$peak") MiB | |
| pod cgroup anonymous (total_rss) | $(mib "$rss") MiB | |
| process VmRSS / VmHWM | $(mib "$vmrss") / $(mib "$vmhwm") MiB | <= $TARGET_MIB MiB ($(verdict "$vmhwm")) |
EOF
((ready >= N)) || { echo "bench-pod: only $ready of $N objects became Ready" >&2; exit 1; }
