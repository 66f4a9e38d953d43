# cri-mini build, test and run targets. Integration tests need root.
GO      ?= go
BIN     := bin/cri-mini
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build test unit vet clean proto

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/cri-mini
	$(GO) build -ldflags "$(LDFLAGS)" -o $(dir $(BIN))cri-mini-shim ./cmd/cri-mini-shim

# proto: regenerates proto/'s Go from its .proto files (the generated code
# is committed; needs protoc, Debian's protobuf-compiler, and protoc-gen-go
# of the google.golang.org/protobuf version go.mod names).
PROTOC_GEN_GO_VERSION := $(shell $(GO) list -m -f '{{.Version}}' google.golang.org/protobuf)
proto:
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	PATH=$(CURDIR)/bin:$$PATH protoc --go_out=. --go_opt=module=github.com/cri-mini/cri-mini proto/supervisor/v1/supervisor.proto

# test: unit tests, the root integration tests (namespaces, mounts, cgroups,
# a loopback registry, CNI), the CRI validation suite (make e2e), a real
# kubelet with static pods (make kubelet-e2e; its first build takes ~5 min,
# then it is cached) and the fixed CI part of Kubernetes' node e2e suite
# (make node-e2e-ci), all on this host's cgroups, and then the suites again
# where production nodes run: cgroup v2 with systemd (make test-v2). Run as
# root.
test: vet
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) e2e
	$(MAKE) kubelet-e2e
	$(MAKE) node-e2e-ci
	$(MAKE) test-v2

# unit: the quick loop, as any user, in well under a minute: the tests that
# need no root (go test -short; a test that needs root skips under -short
# and without root, through internal/roottest).
unit:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

clean:
	rm -rf bin

# e2e: the CRI validation suite (critest v1.37.0) against cri-mini, offline:
# local images on a loopback registry, throw-away daemon. Run as root.
.PHONY: e2e
e2e: build
	e2e/critest/run.sh

# test-v2: the suites where production nodes run (e2e/v2vm): a throw-away
# Debian 12 guest (qemu; KVM where the host allows it, else a software CPU)
# with systemd as PID 1 and the unified cgroup v2 hierarchy runs the root
# suites of container/cgroups, container, sandbox, netns and e2e, then
# critest and the kubelet scenarios with the systemd cgroup driver, all built
# on the host. The guest image is built once (~2.5 min) and cached in
# ~/.cache/cri-mini-v2vm. V2_SUITES="container sandbox ..." runs a part.
# Run as root.
.PHONY: test-v2
test-v2:
	e2e/v2vm/run.sh $(V2_SUITES)

# bench: cri-mini side by side with containerd v2.4.2 + runc v1.5.3 (built
# from the Go module proxy, cached); CRI_MINI_BIN=bin/cri-mini adds cri-mini.
# Writes bench-out/results.{json,svg}. Run as root.
.PHONY: bench
bench:
	bench/run.sh

# demo: the main job on a fresh Debian machine: build, start the daemon, run a
# pod through crictl, show it, clean up. Run as root.
.PHONY: demo
demo:
	e2e/demo.sh

# kubelet-e2e: a real kubelet v1.37.2 (built from the Go module proxy, cached)
# in standalone mode against cri-mini, offline: the static pods of
# manifests/e2e-*.yaml (logs, emptyDir, restarts, liveness probe, teardown,
# kubelet and cri-mini restarts). Run as root.
.PHONY: kubelet-e2e
kubelet-e2e:
	e2e/kubelet/run.sh

# install: the binaries, the systemd unit (KillMode=process: containers
# outlive daemon restarts), the default config and crictl.yaml. Existing
# config files are kept. DESTDIR and PREFIX as usual. Run as root.
PREFIX ?= /usr/local
.PHONY: install
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/cri-mini
	install -D -m 0755 $(dir $(BIN))cri-mini-shim $(DESTDIR)$(PREFIX)/bin/cri-mini-shim
	install -D -m 0644 manifests/cri-mini.service $(DESTDIR)/etc/systemd/system/cri-mini.service
	test -e $(DESTDIR)/etc/cri-mini/cri-mini.toml || install -D -m 0644 manifests/cri-mini.toml $(DESTDIR)/etc/cri-mini/cri-mini.toml
	test -e $(DESTDIR)/etc/crictl.yaml || install -D -m 0644 manifests/crictl.yaml $(DESTDIR)/etc/crictl.yaml

# node-e2e: Kubernetes' node e2e suite (k8s.io/kubernetes v1.37.2
# test/e2e_node, built from the Go module proxy and cached, as kubelet is)
# against cri-mini, offline: its PR-gating set ([NodeConformance] without
# Flaky, Slow, Serial or Disruptive) but the groups of e2e/node/skip.txt.
# NODE_E2E_RUNTIME=containerd runs it against containerd 2.4.2 + runc
# instead; NODE_E2E_PROCS (default 6) parallel processes. Needs the ports
# 6443, 10248, 10250 and 10255 and no /var/lib/kubelet. Run as root.
# node-e2e-ci: the fixed subset of e2e/node/ci-specs.txt that make test runs.
# node-e2e-slow: the rest of [NodeConformance] but Flaky and Disruptive, in
# two runs: its [Slow] specs that are not [Serial] (145; NODE_E2E_PROCS
# processes), then its [Serial] ones (33; one process), skip.txt applied to
# both; NODE_E2E_SETS=slow or =serial runs one of them, NODE_E2E_TIMEOUT caps
# each run (default 90m).
NODE_E2E_RUNTIME ?= cri-mini
NODE_E2E_SETS ?= slow serial
.PHONY: node-e2e node-e2e-ci node-e2e-slow
node-e2e:
	e2e/node/run.sh $(NODE_E2E_RUNTIME)

node-e2e-ci:
	NODE_E2E_SPECS=e2e/node/ci-specs.txt e2e/node/run.sh $(NODE_E2E_RUNTIME)

node-e2e-slow:
	rc=0; for set in $(NODE_E2E_SETS); do NODE_E2E_SET=$$set e2e/node/run.sh $(NODE_E2E_RUNTIME) || rc=1; done; exit $$rc
