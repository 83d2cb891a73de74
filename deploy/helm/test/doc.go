// Package helmtest checks the Gatehouse Helm chart (deploy/helm/gatehouse)
// without a cluster: helm lint --strict, helm template with each values set,
// every rendered document decoded strictly into its Kubernetes API type,
// and cross-checks against the gatehouse binary of the repository (the
// rendered config validates, the rendered Envoy bootstrap equals what
// `gatehouse bootstrap` prints, the CA install script yields a CA the certs
// package loads).
//
// It is a module of its own so that the repository's go.mod does not grow
// Kubernetes dependencies. Run it from the repository root with
//
//	cd deploy/helm/test && go test -count=1 ./...
//
// GATEHOUSE_BIN names a gatehouse binary to use instead of building one.
// helm is taken from ${GATEHOUSE_CACHE:-<repo>/.cache}/bin/helm, built
// there by build-helm.sh when missing.
package helmtest
