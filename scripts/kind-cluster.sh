#!/usr/bin/env bash
# A real KServe cluster on kind for the cluster and e2e tiers' real-cluster mode (maintainers with
# internet access; it cannot run on the offline build machines, where `make test` uses the test API
# server and the KServe stand-in instead).
#
#   scripts/kind-cluster.sh            # create the cluster and install everything (10-15 min)
#   scripts/kind-cluster.sh delete     # delete it
#
# Then run the tiers against it:
#
#   LLM_ROLLOUT_TEST_KUBECONFIG=build/kind/kubeconfig .venv/bin/python -m pytest tests/cluster tests/e2e
#
# Tests that need the test API server or the stand-in (fault injection, API server restarts, the
# stand-in's counters) skip there, with a reason naming real-cluster mode.
#
# Pinned versions (override with the environment variables of the same name):
#   kind node       Kubernetes v1.33 (KServe 0.20 needs 1.32+)
#   cert-manager    v1.17.0          (KServe's webhooks' certificates)
#   Gateway API     v1.3.0           (standard CRDs; Standard-mode canary weights need it)
#   Envoy Gateway   v1.5.0           (the Gateway API implementation, GatewayClass "envoy")
#   KEDA            2.18.0           (what KServe 0.20 installs; the default autoscaling)
#   KServe          v0.20.0          (CRDs and controller, Standard mode, Gateway API on;
#                                     the LLMInferenceService controller for llm-d)
set -euo pipefail

CLUSTER_NAME="${CLUSTER_NAME:-llm-rollout}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.33.1}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.17.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.3.0}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-v1.5.0}"
KEDA_VERSION="${KEDA_VERSION:-2.18.0}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
OUT_DIR="${OUT_DIR:-build/kind}"
KUBECONFIG_OUT="${OUT_DIR}/kubeconfig"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "kind-cluster.sh: $1 is not installed ($2)" >&2; exit 2; }
}

if [[ "${1:-create}" == "delete" ]]; then
  need kind "https://kind.sigs.k8s.io"
  kind delete cluster --name "${CLUSTER_NAME}"
  rm -f "${KUBECONFIG_OUT}"
  exit 0
fi

need kind "https://kind.sigs.k8s.io"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
mkdir -p "${OUT_DIR}"

if ! kind get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  kind create cluster --name "${CLUSTER_NAME}" --image "${KIND_NODE_IMAGE}" --wait 120s
fi
kind get kubeconfig --name "${CLUSTER_NAME}" >"${KUBECONFIG_OUT}"
chmod 600 "${KUBECONFIG_OUT}"
export KUBECONFIG="${KUBECONFIG_OUT}"

echo "== cert-manager ${CERT_MANAGER_VERSION}"
helm upgrade --install cert-manager oci://quay.io/jetstack/charts/cert-manager \
  --version "${CERT_MANAGER_VERSION}" --namespace cert-manager --create-namespace \
  --set crds.enabled=true --wait

echo "== Gateway API ${GATEWAY_API_VERSION} and Envoy Gateway ${ENVOY_GATEWAY_VERSION}"
kubectl apply --server-side -f \
  "https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/standard-install.yaml"
helm upgrade --install eg oci://docker.io/envoyproxy/gateway-helm \
  --version "${ENVOY_GATEWAY_VERSION}" --namespace envoy-gateway-system --create-namespace --wait
kubectl create namespace kserve --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f - <<'EOF'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: envoy
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
---
# KServe's default Gateway (kserve/kserve-ingress-gateway): Standard-mode HTTPRoutes attach here.
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: kserve-ingress-gateway
  namespace: kserve
spec:
  gatewayClassName: envoy
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      allowedRoutes:
        namespaces:
          from: All
EOF

echo "== KEDA ${KEDA_VERSION}"
helm repo add kedacore https://kedacore.github.io/charts >/dev/null
helm repo update kedacore >/dev/null
helm upgrade --install keda kedacore/keda --version "${KEDA_VERSION}" \
  --namespace keda --create-namespace --wait

echo "== KServe ${KSERVE_VERSION} (Standard mode, Gateway API) and the LLMInferenceService controller"
helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
  --version "${KSERVE_VERSION}" --namespace kserve --wait
helm upgrade --install kserve-llmisvc-crd oci://ghcr.io/kserve/charts/kserve-llmisvc-crd \
  --version "${KSERVE_VERSION}" --namespace kserve --wait
helm upgrade --install kserve oci://ghcr.io/kserve/charts/kserve-resources \
  --version "${KSERVE_VERSION}" --namespace kserve \
  --set kserve.controller.deploymentMode=Standard \
  --set kserve.controller.gateway.ingressGateway.enableGatewayApi=true \
  --set kserve.controller.gateway.ingressGateway.kserveGateway=kserve/kserve-ingress-gateway \
  --wait
helm upgrade --install kserve-llmisvc oci://ghcr.io/kserve/charts/kserve-llmisvc-resources \
  --version "${KSERVE_VERSION}" --namespace kserve --wait

kubectl wait --for=condition=Established --timeout=120s \
  crd/inferenceservices.serving.kserve.io crd/servingruntimes.serving.kserve.io \
  crd/llminferenceservices.serving.kserve.io crd/scaledobjects.keda.sh
kubectl -n kserve rollout status deployment --timeout=300s

echo
echo "Ready. Run the cluster and e2e tiers against it:"
echo "  LLM_ROLLOUT_TEST_KUBECONFIG=${KUBECONFIG_OUT} .venv/bin/python -m pytest tests/cluster tests/e2e"
