# shellcheck shell=bash
# The rig's node: sourced by scripts/rig (uses its launch/stop/pid_of/kc/log/die helpers).
#
#   host namespace                     | node namespace bpl-<id> (created here)
#   etcd, kube-apiserver, emulator,    | eth0 <-veth-> eth0p, eth0 = NODE_IP/24 (a seeded instance's
#   controller-manager, scheduler on   |   address), default route "unreachable": nothing leaves
#   127.0.0.1 (as without a cluster)   | containerd, kubelet, kube-proxy (nsenter --net)
#                                      | cni0 bridge 10.0.128.1/24, pods 10.0.128.0/24 (VPC CIDR)
#   rig-netns-proxy.py: listens in the node namespace on 0.0.0.0:<apiserver port> and
#   0.0.0.0:<emulator port> and relays to host 127.0.0.1; serves kube-apiserver's egress selector
#   (HTTP CONNECT on a Unix socket) by dialling kubelet/pod addresses from inside the namespace.
#
# Host paths (removed by cluster_down): /var/lib/bpl-rig/<id>, /run/bpl-rig/<id>, /run/netns/bpl-<id>,
# cgroup bpl-rig-<id> in every v1 hierarchy, /var/log/containers links into our pod logs.

RIG_ID=$(printf '%s' "$RIG" | sha256sum | cut -c1-8)
NETNS="bpl-$RIG_ID"
NETNS_PATH="/run/netns/$NETNS"
NODE_VAR="/var/lib/bpl-rig/$RIG_ID"
NODE_RUN="/run/bpl-rig/$RIG_ID"
NODE_DIR="$RIG/node"
CTRD_SOCK="$NODE_RUN/containerd.sock"
CGROOT="bpl-rig-$RIG_ID"
POD_CIDR=10.0.128.0/24
POD_GW=10.0.128.1
SVC_CIDR=10.96.0.0/24
EGRESS_SOCK="$RIG/egress.sock"
IMAGE_REPO=bpl-rig.local
PAUSE_IMAGE="$IMAGE_REPO/pause:1"
KUBELET_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)

cluster_enabled() { [[ -f "$RIG/cluster" ]]; }

nsx() { nsenter --net="$NETNS_PATH" "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

cluster_require() {
  [[ $(id -u) -eq 0 ]] || die "the cluster needs root (network namespace, containerd, kubelet)"
  local b
  for b in kubelet kube-controller-manager kube-scheduler kube-proxy pause; do
    [[ -x "$BIN/$b" ]] || { "$ROOT/scripts/rig-build.sh" node; break; }
  done
  command -v containerd >/dev/null && command -v runc >/dev/null && [[ -x /usr/lib/cni/bridge ]] &&
    command -v iptables >/dev/null || "$ROOT/scripts/rig-build.sh" packages
}

# The node is the seeded instance of the first subnet: its name, address and providerID.
node_facts() {
  read -r NODE_NAME NODE_IP NODE_AZ NODE_INSTANCE < <("$VENV/bin/python" -c '
import json, sys
i = json.load(open(sys.argv[1]))["instances"][0]
print(i["private_dns"], i["private_ip"], i["az"], i["id"])' "$RIG/seed.json")
  NODE_PROVIDER_ID="aws:///$NODE_AZ/$NODE_INSTANCE"
}

# The VPC's Amazon-provided resolver: the seeded VPC's CIDR base + 2.
vpc_resolver() {
  "$VENV/bin/python" -c '
import ipaddress, json, sys
seed = json.load(open(sys.argv[1]))
print(ipaddress.ip_network(seed["vpc_cidr"]).network_address + 2)' "$RIG/seed.json"
}

netns_up() {
  if [[ -e "$NETNS_PATH" ]] && nsx ip -4 addr show dev eth0 2>/dev/null | grep -q "inet $NODE_IP/"; then return; fi
  [[ -e "$NETNS_PATH" ]] && ip netns delete "$NETNS"
  log "network namespace $NETNS: node address $NODE_IP on a veth pair, pods $POD_CIDR"
  ip netns add "$NETNS"
  nsx ip link set lo up
  nsx ip link add eth0 type veth peer name eth0p
  nsx ip addr add "$NODE_IP/24" dev eth0
  nsx ip link set eth0p up
  nsx ip link set eth0 up
  # Nothing leaves the namespace: no address outside it is routable.
  nsx ip route add unreachable default
  # Service IPs from the node itself (probes, `rig node-exec curl`): a route to look up before
  # kube-proxy's OUTPUT DNAT rewrites the destination to a pod
  nsx ip route add "$SVC_CIDR" dev eth0 src "$NODE_IP"
  nsx sysctl -qw net.ipv4.ip_forward=1
  # pod -> Service -> pod on the same bridge needs the bridge's traffic to pass iptables (a per
  # namespace setting since Linux 5.3)
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && nsx sysctl -qw net.bridge.bridge-nf-call-iptables=1 || true
}

write_node_config() {
  mkdir -p "$NODE_DIR/cni" "$NODE_VAR" "$NODE_RUN"
  cat >"$NODE_DIR/containerd.toml" <<EOF
version = 2
root = "$NODE_VAR/containerd"
state = "$NODE_RUN/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$NODE_RUN/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
    max_conf_num = 1
EOF
  cat >"$NODE_DIR/cni/10-bpl-rig.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "bpl-rig-$RIG_ID",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE_RUN/cni-ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}
EOF
  # The node's resolver is the VPC's (as on an EC2 instance): pods (no cluster DNS on the rig, so
  # kubelet gives ClusterFirst pods this file) resolve Bedrock names where the operator's private
  # DNS makes them point.
  printf 'nameserver %s\nsearch ec2.internal\noptions ndots:1\n' "$(vpc_resolver)" >"$NODE_DIR/resolv.conf"
  "$ROOT/scripts/pki.sh" "$PKI" node "$NODE_NAME" "$NODE_IP"
  local in_ns="https://127.0.0.1:$APISERVER_PORT"  # the proxy's listener inside the namespace
  node_kubeconfig "$NODE_DIR/kubelet.kubeconfig" "$in_ns" "node-$NODE_NAME" "system:node:$NODE_NAME"
  node_kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" "$in_ns" kube-proxy system:kube-proxy
  node_kubeconfig "$NODE_DIR/kcm.kubeconfig" "https://127.0.0.1:$APISERVER_PORT" kube-controller-manager system:kube-controller-manager
  node_kubeconfig "$NODE_DIR/scheduler.kubeconfig" "https://127.0.0.1:$APISERVER_PORT" kube-scheduler system:kube-scheduler
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/node-$NODE_NAME-serving.crt
tlsPrivateKeyFile: $PKI/node-$NODE_NAME-serving.key
providerID: $NODE_PROVIDER_ID
containerRuntimeEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROOT
failCgroupV1: false
failSwapOn: false
maxOpenFiles: 20000
clusterDomain: cluster.local
resolvConf: $NODE_DIR/resolv.conf
podLogsDir: $NODE_VAR/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
maxPods: 60
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
EOF
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: [primary]
EOF
}

node_kubeconfig() { # FILE SERVER CERTNAME USER
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rig
  cluster: {server: "$2", certificate-authority: "$PKI/ca.crt"}
users:
- name: "$4"
  user: {client-certificate: "$PKI/$3.crt", client-key: "$PKI/$3.key"}
contexts:
- name: rig
  context: {cluster: rig, user: "$4"}
current-context: rig
EOF
  chmod 600 "$1"
}

# The apiserver flags that only make sense with a node (read by start_apiserver).
cluster_apiserver_flags() {
  cluster_enabled || return 0
  cat >"$RIG/egress.yaml" <<EOF
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds: {udsName: $EGRESS_SOCK}
EOF
  printf '%s\n' "--egress-selector-config-file=$RIG/egress.yaml" \
    "--kubelet-client-certificate=$PKI/apiserver-kubelet-client.crt" \
    "--kubelet-client-key=$PKI/apiserver-kubelet-client.key" \
    "--kubelet-certificate-authority=$PKI/ca.crt"
}

ensure_sysctl_snapshot() {
  [[ -f "$RIG/sysctl.saved" ]] && return
  local k; for k in "${KUBELET_SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$RIG/sysctl.saved"
}

cgroup_setup() {
  local d
  for d in /sys/fs/cgroup/*/; do
    [[ -f "$d/cgroup.procs" ]] || continue
    mkdir -p "$d$CGROOT"
    if [[ -f "$d/cpuset.cpus" ]]; then   # a v1 cpuset child starts empty
      cat "$d/cpuset.cpus" >"$d$CGROOT/cpuset.cpus" 2>/dev/null || true
      cat "$d/cpuset.mems" >"$d$CGROOT/cpuset.mems" 2>/dev/null || true
    fi
  done
}

start_netproxy() {
  if running netproxy; then return; fi
  launch netproxy "$VENV/bin/python" "$ROOT/scripts/rig-netns-proxy.py" --netns "$NETNS_PATH" \
    --forward "0.0.0.0:$APISERVER_PORT=127.0.0.1:$APISERVER_PORT" \
    --forward "0.0.0.0:$EMULATOR_PORT=127.0.0.1:$EMULATOR_PORT" \
    --egress-uds "$EGRESS_SOCK"
  wait_for netproxy "egress socket" test -S "$EGRESS_SOCK"
}

start_containerd() {
  if running containerd; then return; fi
  log "starting containerd $(containerd --version | awk '{print $3}') in $NETNS"
  launch containerd nsenter --net="$NETNS_PATH" containerd --config "$NODE_DIR/containerd.toml"
  wait_for containerd "containerd socket" ctr_ version
}

# import_image TAR: into the k8s.io namespace of the rig's containerd
import_image() { ctr_ images import "$1" >/dev/null; }

ensure_pause_image() {
  ctr_ images ls -q | grep -qxF "$PAUSE_IMAGE" && return
  "$VENV/bin/python" "$ROOT/scripts/rig-image.py" --out "$NODE_DIR/pause.tar" --name "$PAUSE_IMAGE" \
    --entrypoint /pause --user 65535:65535 --file "$BIN/pause=/pause:0755" >/dev/null
  import_image "$NODE_DIR/pause.tar"
  ctr_ images label "$PAUSE_IMAGE" io.cri-containerd.pinned=pinned >/dev/null
}

# A small image with a shell for workloads on the rig (the demo's examples/workload-deployment.yaml
# names public.ecr.aws/aws-cli/aws-cli, which the rig cannot pull): static busybox, uid 65532.
WORKLOAD_IMAGE="$IMAGE_REPO/workload:1"
ensure_workload_image() {
  ctr_ images ls -q | grep -qxF "$WORKLOAD_IMAGE" && return
  local args=() c
  for c in sh env grep sort sleep cat wget ls; do args+=(--symlink "/bin/$c=busybox"); done
  "$VENV/bin/python" "$ROOT/scripts/rig-image.py" --out "$NODE_DIR/workload.tar" --name "$WORKLOAD_IMAGE" \
    --entrypoint /bin/sh --user 65532:65532 --file "/bin/busybox=/bin/busybox:0755" --passwd --ca-certs "${args[@]}" >/dev/null
  import_image "$NODE_DIR/workload.tar"
}

start_kubelet() {
  if running kubelet; then return; fi
  ensure_sysctl_snapshot
  log "starting kubelet $(k8s_version) as node $NODE_NAME ($NODE_IP, $NODE_PROVIDER_ID)"
  launch kubelet nsenter --net="$NETNS_PATH" "$BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" \
    --kubeconfig "$NODE_DIR/kubelet.kubeconfig" --root-dir "$NODE_VAR/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "topology.kubernetes.io/zone=$NODE_AZ,topology.kubernetes.io/region=$REGION,node.kubernetes.io/instance-type=m5.large,bpl-rig/kubelet=true" \
    --v=1
}

start_kube_proxy() {
  running kube-proxy && return
  launch kube-proxy nsenter --net="$NETNS_PATH" "$BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml" --v=1
}

start_controller_manager() {
  running kube-controller-manager && return
  local p; p=$(free_ports 1)
  launch kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$NODE_DIR/kcm.kubeconfig" \
    --authentication-kubeconfig "$NODE_DIR/kcm.kubeconfig" --authorization-kubeconfig "$NODE_DIR/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$p" --leader-elect=false \
    --use-service-account-credentials=true --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SVC_CIDR" --cluster-name "rig-$RIG_ID" --cert-dir "$NODE_DIR/kcm-certs" \
    --concurrent-gc-syncs 5 --v=1
}

start_scheduler() {
  running kube-scheduler && return
  local p; p=$(free_ports 1)
  launch kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$NODE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$NODE_DIR/scheduler.kubeconfig" --authorization-kubeconfig "$NODE_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$p" --leader-elect=false --v=1
}

# The `kubernetes` Service's endpoint for pods: the proxy's listener on the node address (no lease
# reconciler: the apiserver itself listens on 127.0.0.1, which an EndpointSlice cannot hold).
apiserver_endpoint() {
  kc apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: bpl-rig}
addressType: IPv4
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
ports:
- {name: https, port: $APISERVER_PORT, protocol: TCP}
EOF
}

node_ready() {
  [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
default_sa() { kc -n default get serviceaccount default; }

# Host paths kubelet/containerd/CNI create outside their configured roots (hard-coded): removed by
# cluster_down only if they did not exist before the node first started.
HOST_PATHS=(/var/lib/kubelet /var/lib/cni /run/containerd /var/log/containers /var/log/pods)
note_host_paths() {
  local p
  for p in "${HOST_PATHS[@]}"; do
    [[ -e "$p" ]] || grep -qxF "$p" "$RIG/host-paths" 2>/dev/null || echo "$p" >>"$RIG/host-paths"
  done
}

cluster_up() {
  cluster_require
  touch "$RIG/cluster"
  note_host_paths
  node_facts
  netns_up
  write_node_config
  cgroup_setup
  # the apiserver needs the egress selector and kubelet client flags
  if running kube-apiserver && ! tr '\0' ' ' <"/proc/$(pid_of kube-apiserver)/cmdline" | grep -q egress-selector; then
    log "restarting kube-apiserver with the node flags"
    stop kube-apiserver
    start_apiserver
  fi
  start_netproxy
  start_controller_manager
  start_scheduler
  start_containerd
  ensure_pause_image
  ensure_workload_image
  apiserver_endpoint
  start_kubelet
  start_kube_proxy
  wait_for kubelet "node $NODE_NAME Ready" node_ready
  wait_for kube-controller-manager "default ServiceAccount" default_sa
  log "node $NODE_NAME Ready"
}

# Everything the node left: pods and shims (by cgroup), containerd, mounts, cgroups, sysctls.
cluster_down() {
  [[ -f "$RIG/cluster" || -e "$NETNS_PATH" || -d "$NODE_VAR" || -f "$PIDS/kubelet.pid" ]] || return 0
  stop kubelet
  stop kube-proxy
  local d pid i f
  # container processes and shims: whatever sits in our cgroups, and shims serving our containerd
  for i in 1 2 3; do
    for d in /sys/fs/cgroup/pids/"$CGROOT" /sys/fs/cgroup/memory/"$CGROOT"; do
      [[ -d "$d" ]] || continue
      find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | while read -r pid; do
        kill -KILL "$pid" 2>/dev/null || true
      done
    done
    for f in "$NODE_RUN"/containerd/io.containerd.runtime.v2.task/*/*/shim.pid; do
      [[ -f "$f" ]] || continue
      pid=$(cat "$f"); [[ "$pid" =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null || true
    done
    sleep 0.3
  done
  stop containerd
  stop kube-scheduler
  stop kube-controller-manager
  stop netproxy
  # mounts below our state (pod volumes, rootfs, netns, shm), deepest first
  local m
  for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($NODE_VAR|$NODE_RUN)(/|$)" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  [[ -e "$NETNS_PATH" ]] && { ip netns delete "$NETNS" 2>/dev/null || umount -l "$NETNS_PATH" 2>/dev/null; rm -f "$NETNS_PATH"; }
  # cgroups, children first
  for d in /sys/fs/cgroup/*/"$CGROOT"; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$NODE_VAR/*" -delete 2>/dev/null || true
    rmdir /var/log/containers 2>/dev/null || true
  fi
  rm -rf "/var/lib/cni/results/bpl-rig-$RIG_ID"-* 2>/dev/null || true
  rm -rf "$NODE_VAR" "$NODE_RUN"
  if [[ -f "$RIG/host-paths" ]]; then
    local p; while read -r p; do [[ "$p" == /* ]] && rm -rf "$p"; done <"$RIG/host-paths"
    rm -f "$RIG/host-paths"
  fi
  rmdir /var/lib/bpl-rig /run/bpl-rig 2>/dev/null || true
  if [[ -f "$RIG/sysctl.saved" ]]; then
    local kv; while read -r kv; do sysctl -qw "$kv" || true; done <"$RIG/sysctl.saved"
    rm -f "$RIG/sysctl.saved"
  fi
  rm -f "$RIG/cluster" "$EGRESS_SOCK"
  log "node removed (namespace, containerd state, cgroups, sysctls restored)"
  return 0
}

cluster_status() {
  local name rc=0 pid
  for name in netproxy kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if pid=$(pid_of "$name"); then printf '%-23s running  pid %s\n' "$name" "$pid"; else printf '%-23s stopped\n' "$name"; rc=1; fi
  done
  return $rc
}
