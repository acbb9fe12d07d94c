#!/usr/bin/env bash
# The operator end to end on the local rig, the way users run it: the rig with a real node
# (kube-apiserver, etcd, controller-manager, scheduler, kubelet + containerd, EC2 emulator), the
# operator image built here and imported into the node, `helm install` of the chart, then:
#
#   scripts/demo.sh        (or `make demo`) apply examples/basic.yaml, wait for Ready, describe it,
#                          run examples/workload-deployment.yaml as a pod and print the Bedrock
#                          variables it received through envFrom, limit the policy to one model,
#                          then a pod's Bedrock call answered through the private endpoint and a
#                          call for another model denied by the endpoint policy, and the DNS names
#   scripts/demo.sh stop   delete the demo object (the operator removes its endpoint and security
#                          group), the workload, and uninstall the release
#
# Running it again is harmless: everything it does is idempotent (a new image rolls the pod).
# The operator watches only the namespace `default`, so it never races the operators that tests
# start for their own namespaces on the same rig. Needs root (the node); the rig's pods can reach
# only the rig's own addresses.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RIG="${RIG_DIR:-$ROOT/.rig}"
NS=default
NAME=demo
CRD=bedrockprivatelinks.bedrock.privatelink.io
OP_NS=bedrock-privatelink-system
RELEASE=bedrock-privatelink-operator
CHART=charts/bedrock-privatelink-operator

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


# The release's namespace: Pod Security "restricted" enforced, and the AWS credentials the pod
# reads (fake ones for the emulator; on EKS use IRSA or Pod Identity instead, see docs/install.md).
prepare_namespace() {
  kubectl create namespace "$OP_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$OP_NS" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
  kubectl -n "$OP_NS" create secret generic rig-aws --from-literal=AWS_ACCESS_KEY_ID=testing \
    --from-literal=AWS_SECRET_ACCESS_KEY=testing --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

helm_install() {
  local image=$1 tag=${1##*:}
  local values="$RIG/demo-values.yaml"
  cat >"$values" <<EOF
image: {repository: "${image%:*}", tag: "$tag", pullPolicy: Never}
aws: {region: "$AWS_REGION", ec2EndpointUrl: "$RIG_POD_EC2_ENDPOINT"}
watchNamespaces: [$NS]
resyncSeconds: 60
extraEnv:
  - {name: AWS_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: rig-aws, key: AWS_ACCESS_KEY_ID}}}
  - {name: AWS_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: rig-aws, key: AWS_SECRET_ACCESS_KEY}}}
  - {name: AWS_EC2_METADATA_DISABLED, value: "true"}
EOF
  helm upgrade --install "$RELEASE" "$CHART" -n "$OP_NS" -f "$values" --wait --timeout 180s
}

# examples/workload-deployment.yaml with the rig's small image (busybox; the example names the AWS
# CLI image, which the rig cannot pull): same command, same envFrom.
workload_manifest() {
  sed "s#public.ecr.aws/aws-cli/aws-cli:2.22.0#$RIG_IMAGE_REPO/workload:1#" examples/workload-deployment.yaml
}

DEMO_MODEL=anthropic.claude-3-haiku-20240307-v1:0
DEMO_DENIED_MODEL=amazon.titan-text-express-v1

# The rig CA that signs the Bedrock stand-in's certificate, for the pods (AWS_CA_BUNDLE).
ca_config_map() {
  kubectl -n "$NS" create configmap rig-ca --from-file=ca.pem="$RIG_BEDROCK_CA" --dry-run=client -o yaml |
    kubectl apply -f - >/dev/null
}

# probe_pod NAME MODEL [ARGS]: `bedrock-privatelink-operator probe` as a workload pod (non-root,
# read-only root, envFrom the published ConfigMap); prints its report, fails if the probe did.
probe_pod() {
  local name=$1 model=$2; shift 2
  local extra="" a
  for a in "$@"; do extra+=", \"$a\""; done
  kubectl -n "$NS" delete pod "$name" --ignore-not-found --wait=true >/dev/null
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: $NS}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: probe
      image: $PROBE_IMAGE
      imagePullPolicy: Never
      args: ["probe", "--model", "$model"$extra]
      envFrom: [{configMapRef: {name: $NAME-bedrock}}]
      env:
        - {name: AWS_ACCESS_KEY_ID, value: testing}
        - {name: AWS_SECRET_ACCESS_KEY, value: testing}
        - {name: AWS_CA_BUNDLE, value: /etc/rig-ca/ca.pem}
      volumeMounts: [{name: ca, mountPath: /etc/rig-ca, readOnly: true}]
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
  volumes: [{name: ca, configMap: {name: rig-ca}}]
EOF
  local phase="" i
  for ((i = 0; i < 60; i++)); do
    phase=$(kubectl -n "$NS" get pod "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    [[ "$phase" == Succeeded || "$phase" == Failed ]] && break
    sleep 1
  done
  kubectl -n "$NS" logs "$name" | sed 's/^/  /'
  [[ "$phase" == Succeeded ]]
}

cmd_up() {
  local t0=$SECONDS image
  step "scripts/rig up --cluster (kube-apiserver, etcd, controller-manager, scheduler, a kubelet node, EC2 emulator)"
  scripts/rig up --cluster >/dev/null
  scripts/rig status
  load_env
  kubectl get nodes -o custom-columns='NODE:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,ZONE:.metadata.labels.topology\.kubernetes\.io/zone,PROVIDER-ID:.spec.providerID,KUBELET:.metadata.labels.bpl-rig/kubelet'

  step "scripts/rig image (cargo profile image; the image has the binary, its libraries, CA certificates; uid 65532)"
  image=$(scripts/rig image dev)
  PROBE_IMAGE=$image
  echo "$image"

  step "kubectl apply --server-side -f crds/ (helm installs the chart's CRD only once)"
  kubectl apply --server-side --force-conflicts -f crds/
  kubectl wait --for=condition=Established --timeout=30s "crd/$CRD" crd/bedrockprivatelinkgrants.bedrock.privatelink.io

  step "helm upgrade --install $RELEASE $CHART -n $OP_NS (namespace enforces Pod Security restricted)"
  prepare_namespace
  helm_install "$image"
  # a rebuilt image under the same tag: roll the pod so it runs the new one
  kubectl -n "$OP_NS" rollout restart "deploy/$RELEASE" >/dev/null
  kubectl -n "$OP_NS" rollout status "deploy/$RELEASE" --timeout=120s
  kubectl -n "$OP_NS" get pods -o wide

  step "kubectl apply -f examples/grant.yaml (the cluster admin lets namespace default use private DNS)"
  kubectl apply --server-side --force-conflicts -f examples/grant.yaml
  kubectl get bplgrant

  step "kubectl apply -f examples/basic.yaml (no vpcId, no subnets: discovered from the Nodes)"
  kubectl apply -f examples/basic.yaml

  step "kubectl wait --for=condition=Ready bpl/$NAME --timeout=120s"
  if ! kubectl -n "$NS" wait --for=condition=Ready "bpl/$NAME" --timeout=120s; then
    kubectl -n "$NS" describe bpl "$NAME" || true
    echo "--- operator log (tail)"
    kubectl -n "$OP_NS" logs "deploy/$RELEASE" --tail=40 || true
    die "bpl/$NAME did not become Ready"
  fi

  step "kubectl wait --for=condition=PrivatePathVerified bpl/$NAME (the operator resolved the Bedrock names as its pod does)"
  kubectl -n "$NS" wait --for=condition=PrivatePathVerified "bpl/$NAME" --timeout=90s ||
    kubectl -n "$NS" get bpl "$NAME" -o jsonpath='{.status.conditions[?(@.type=="PrivatePathVerified")].message}{"\n"}'

  step "kubectl get bpl -o wide"
  kubectl -n "$NS" get bpl -o wide

  step "kubectl describe bpl $NAME"
  kubectl -n "$NS" describe bpl "$NAME"

  step "kubectl apply -f examples/workload-deployment.yaml (image: the rig's busybox): what the pod sees"
  local existed=0
  kubectl -n "$NS" get deploy/bedrock-client >/dev/null 2>&1 && existed=1
  workload_manifest | kubectl apply -f -
  # a new pod reads the ConfigMap again (envFrom is read at container start)
  ((existed)) && kubectl -n "$NS" rollout restart deploy/bedrock-client >/dev/null
  kubectl -n "$NS" rollout status deploy/bedrock-client --timeout=120s
  local i out=""
  for ((i = 0; i < 30; i++)); do
    out=$(kubectl -n "$NS" logs deploy/bedrock-client 2>/dev/null || true)
    [[ -n "$out" ]] && break
    sleep 1
  done
  printf '%s\n' "$out"

  step "limit the endpoint policy to one model (spec.policy.models)"
  kubectl -n "$NS" patch bpl "$NAME" --type=merge -p "{\"spec\":{\"policy\":{\"models\":[\"$DEMO_MODEL\"]}}}"
  kubectl -n "$NS" wait --for=jsonpath='{.status.conditions[?(@.type=="PolicyApplied")].status}'=True "bpl/$NAME" --timeout=60s
  kubectl -n "$NS" wait --for=condition=Ready "bpl/$NAME" --timeout=60s

  step "a workload pod calls Bedrock (AWS SDK for Rust, Converse, envFrom the ConfigMap $NAME-bedrock)"
  ca_config_map
  probe_pod demo-call-allowed "$DEMO_MODEL" || die "the allowed call did not take the private path"

  step "a call for a model outside policy.models: the endpoint policy denies it"
  probe_pod demo-call-denied "$DEMO_DENIED_MODEL" --expect-denied || die "the call was not denied by the endpoint policy"

  step "what the Bedrock stand-in behind the endpoint recorded (address, endpoint, decision)"
  curl -sf "$BPL_EMULATOR_URL/_harness/bedrock/calls" | "$HOME/.cache/bpl-rig/venv/bin/python" -c '
import json, sys
for c in json.load(sys.stdin)["calls"][-2:]:
    print("%s %s: %s path via %s at %s -> %s" % tuple(c.get(k) for k in ("operation", "model", "path_kind", "endpoint", "address", "decision")))'

  step "the endpoint's DNS names"
  kubectl -n "$NS" get bpl "$NAME" -o jsonpath='{range .status.endpoints[*]}{.service}: {.vpcEndpointId} ({.state}) in {.availabilityZones}{"\n"}{range .dnsNames[*]}  {@}{"\n"}{end}  private DNS: {.privateDnsName}{"\n"}{end}'

  step "done in $((SECONDS - t0))s"
  cat <<EOF
The operator runs as a pod: kubectl -n $OP_NS get pods; kubectl -n $OP_NS logs deploy/$RELEASE
Look around:    set -a; source .rig/env; set +a
                kubectl get bpl,configmap -o wide
                kubectl get events --field-selector involvedObject.name=$NAME
After a code change: make demo (rebuilds the image and rolls the pod)
Stop the demo:  scripts/demo.sh stop    (deletes bpl/$NAME and its AWS resources, uninstalls the release)
Stop the rig:   make rig-down
EOF
}

cmd_stop() {
  if ! scripts/rig status >/dev/null 2>&1; then echo "the rig is not running: nothing to delete"; return 0; fi
  load_env
  kubectl -n "$NS" delete deploy/bedrock-client --ignore-not-found
  kubectl -n "$NS" delete pod demo-call-allowed demo-call-denied --ignore-not-found
  if kubectl get crd "$CRD" >/dev/null 2>&1 && kubectl -n "$NS" get bpl "$NAME" >/dev/null 2>&1; then
    step "kubectl delete bpl $NAME (endpoint first, then the security group, then the finalizer)"
    kubectl -n "$NS" delete bpl "$NAME" --wait=true --timeout=120s
  fi
  step "helm uninstall $RELEASE (the CRD stays)"
  helm uninstall "$RELEASE" -n "$OP_NS" --wait 2>/dev/null || echo "release $RELEASE not installed"
  echo "stopped. The rig is still up; stop it with: make rig-down"
}

case "${1:-up}" in
  up) cmd_up ;;
  stop) cmd_stop ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
