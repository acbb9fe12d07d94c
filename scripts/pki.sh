#!/usr/bin/env bash
# Creates the rig's PKI with openssl in DIR (default .rig/pki). Idempotent: existing files are kept.
#   ca.{crt,key}            cluster CA (also the client CA of kube-apiserver)
#   apiserver.{crt,key}     serving cert: 127.0.0.1, localhost, ::1, 10.96.0.1, kubernetes.default.svc...
#   admin.{crt,key}         client cert CN=rig-admin, O=system:masters
#   sa.{key,pub}            service-account token signing key pair (RSA 2048)
#   kube-controller-manager, kube-scheduler, kube-proxy, apiserver-kubelet-client .{crt,key}
#                           client certs of the cluster parts (scripts/rig up --cluster)
# `pki.sh DIR node NAME IP` also makes node-NAME.{crt,key} (client, CN=system:node:NAME,
# O=system:nodes) and node-NAME-serving.{crt,key} (the kubelet's serving cert for IP and NAME).
set -euo pipefail
DIR="${1:-.rig/pki}"
NODE_NAME="" NODE_IP=""
if [[ "${2:-}" == node ]]; then NODE_NAME=$3; NODE_IP=$4; fi
DAYS=3650
mkdir -p "$DIR"
chmod 700 "$DIR"
cd "$DIR"
umask 077

key() { [[ -f "$1" ]] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

if [[ ! -f ca.crt || ! -f ca.key ]]; then
  rm -f ca.crt ca.key apiserver.crt admin.crt
  key ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$DAYS" -subj "/CN=bpl-rig-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out ca.crt 2>/dev/null
fi

# sign NAME SUBJECT EXTFILE-CONTENT
sign() {
  local name=$1 subj=$2 ext=$3
  [[ -f "$name.crt" && -f "$name.key" ]] && return 0
  key "$name.key"
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$DAYS" \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"

sign admin "/O=system:masters/CN=rig-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

client() { sign "$1" "$2" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"; }
client kube-controller-manager "/CN=system:kube-controller-manager"
client kube-scheduler "/CN=system:kube-scheduler"
client kube-proxy "/CN=system:kube-proxy"
client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
if [[ -n "$NODE_NAME" ]]; then
  client "node-$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME"
  sign "node-$NODE_NAME-serving" "/CN=$NODE_NAME" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
fi

if [[ ! -f sa.key || ! -f sa.pub ]]; then
  rm -f sa.key sa.pub
  key sa.key
  openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
fi
chmod 600 ./*.key
chmod 644 ./*.crt sa.pub
