package cri

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
)

// TestSignals: stop signals as images and the CRI name them, read and
// reported back in the CRI's enum.
func TestSignals(t *testing.T) {
	for _, tc := range []struct {
		in   string
		num  unix.Signal
		enum runtimeapi.Signal
	}{
		{"", unix.SIGTERM, runtimeapi.Signal_SIGNAL_SIGTERM},
		{"SIGUSR1", unix.SIGUSR1, runtimeapi.Signal_SIGNAL_SIGUSR1},
		{"quit", unix.SIGQUIT, runtimeapi.Signal_SIGNAL_SIGQUIT},
		{"9", unix.SIGKILL, runtimeapi.Signal_SIGNAL_SIGKILL},
		{"SIGRTMIN", 34, runtimeapi.Signal_SIGNAL_SIGRTMIN},
		{"SIGRTMIN+3", 37, runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3},      // systemd images
		{"SIGRTMINPLUS15", 49, runtimeapi.Signal_SIGNAL_SIGRTMINPLUS15}, // the CRI's spelling
		{"RTMAX-2", 62, runtimeapi.Signal_SIGNAL_SIGRTMAXMINUS2},
		{"SIGRTMAX", 64, runtimeapi.Signal_SIGNAL_SIGRTMAX},
	} {
		sig, err := stopSignal(tc.in)
		if err != nil || sig != tc.num || criSignal(sig) != tc.enum {
			t.Errorf("%q: %d (%v), %v; want %d, %v", tc.in, sig, err, criSignal(sig), tc.num, tc.enum)
		}
	}
	for _, bad := range []string{"SIGNOPE", "65", "SIGRTMIN+31", "RTMAX-x"} {
		if _, err := stopSignal(bad); !errors.Is(err, errNoSuchSignal) {
			t.Errorf("%q: %v, want an unknown signal", bad, err)
		}
	}
}

// TestExitReason: the message says what the exit code does not, and an
// ordinary exit has none (kubelet prefixes it to the termination message).
func TestExitReason(t *testing.T) {
	for _, tc := range []struct {
		st              container.State
		reason, message string
	}{
		{container.State{ExitCode: 0}, "Completed", ""},
		{container.State{ExitCode: 3}, "Error", ""},
		{container.State{ExitCode: 137, Signal: 9}, "Error", "killed by signal SIGKILL (9)"},
		{container.State{ExitCode: 137, Signal: 9, OOMKilled: true}, "OOMKilled", "killed by signal SIGKILL (9)"},
		{container.State{ExitCode: 255, ExitLost: true}, "Error", "the exit status is lost"},
	} {
		reason, message := exitReason(&tc.st)
		if reason != tc.reason || !strings.HasPrefix(message, tc.message) || (tc.message == "") != (message == "") {
			t.Errorf("%+v: %q %q, want %q %q", tc.st, reason, message, tc.reason, tc.message)
		}
	}
}
