package main

import (
	"slices"
	"testing"
)

func TestParsePodCounts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"0,30,110", []int{0, 30, 110}},
		{" 110, 0 ,30,30", []int{0, 30, 110}},
		{"5", []int{5}},
		{"", nil},
		{"none", nil},
	} {
		got, err := parsePodCounts("curve", tc.in, 0)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parsePodCounts(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"0,,30", "-1", "ten", "0;30"} {
		if got, err := parsePodCounts("curve", bad, 0); err == nil {
			t.Errorf("parsePodCounts(%q) = %v, want an error", bad, got)
		}
	}
	if got, err := parsePodCounts("burst", "0,10", 1); err == nil {
		t.Errorf("a burst of 0 pods: %v, want an error", got)
	}
}

func TestUnitOf(t *testing.T) {
	for fig, want := range map[string]string{
		figRunPod: msUnit, figListPodStats: msUnit, figDaemonRSS: mibUnit, figPodProcsPSS: mibUnit,
		figPerPodRSS: mibUnit, figDaemonCPU: cpuUnit, figPodProcsCPU: cpuUnit, figPodProcs: countUnit,
	} {
		if got := unitOf(fig); got != want {
			t.Errorf("unitOf(%q) = %q, want %q", fig, got, want)
		}
	}
}
