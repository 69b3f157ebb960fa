//go:build tools

// Package kubeapiserver pins the real Kubernetes API server that the Kubernetes
// deployer tests run against. It is its own module so that k8s.io/kubernetes never
// enters mlrelease's dependencies: `make kube-apiserver` builds it once into bin/.
package kubeapiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
