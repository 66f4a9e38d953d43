package cri

import (
	"testing"

	"github.com/cri-mini/cri-mini/cri/stats"
)

// TestCRINetwork: eth0 is the default interface; a pod without one reports
// no network usage at all, since kubelet reads the default interface of
// every usage reported.
func TestCRINetwork(t *testing.T) {
	devs := []stats.NetDevice{{Name: "net1", RxBytes: 1}, {Name: "eth0", RxBytes: 2, TxBytes: 3}}
	u := criNetwork(devs, 42)
	if u == nil || u.GetDefaultInterface().GetName() != "eth0" || u.GetDefaultInterface().GetTxBytes().GetValue() != 3 ||
		len(u.GetInterfaces()) != 2 || u.GetTimestamp() != 42 {
		t.Errorf("usage %v, want both interfaces and eth0 as the default", u)
	}
	if u := criNetwork(devs[:1], 42); u != nil {
		t.Errorf("without eth0: %v, want none", u)
	}
	if u := criNetwork(nil, 42); u != nil {
		t.Errorf("no interface: %v, want none", u)
	}
}
