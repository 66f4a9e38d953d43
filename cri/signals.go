package cri

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Real-time signals are numbered as the kernel does, as Docker's and
// containerd's signal tables do too: SIGRTMIN is 34 (glibc's, 36, keeps
// two for itself), SIGRTMAX 64.
const sigRTMin, sigRTMax = 34, 64

var errNoSuchSignal = errors.New("unknown signal")

// parseSignal reads a stop signal as an image config or the CRI names it:
// "SIGTERM", "TERM", "15", "SIGRTMIN+3" (Docker's spelling) or
// "SIGRTMINPLUS3" (the CRI's).
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= sigRTMax {
		return unix.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	name = strings.Replace(strings.Replace(name, "PLUS", "+", 1), "MINUS", "-", 1)
	rt := func(base int, offset string, sign int) (unix.Signal, error) {
		n, err := strconv.Atoi(offset)
		if err != nil || n < 1 || n > sigRTMax-sigRTMin-1 {
			return 0, fmt.Errorf("stop signal %q: %w", s, errNoSuchSignal)
		}
		return unix.Signal(base + sign*n), nil
	}
	switch {
	case name == "RTMIN":
		return sigRTMin, nil
	case name == "RTMAX":
		return sigRTMax, nil
	case strings.HasPrefix(name, "RTMIN+"):
		return rt(sigRTMin, name[len("RTMIN+"):], 1)
	case strings.HasPrefix(name, "RTMAX-"):
		return rt(sigRTMax, name[len("RTMAX-"):], -1)
	}
	if sig := unix.SignalNum("SIG" + name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("stop signal %q: %w", s, errNoSuchSignal)
}

// criSignal is sig as the CRI's enum names it; SIGNAL_RUNTIME_DEFAULT for
// a number the enum has no name for.
func criSignal(sig unix.Signal) runtimeapi.Signal {
	name := unix.SignalName(sig)
	switch {
	case sig == sigRTMin:
		name = "SIGRTMIN"
	case sig == sigRTMax:
		name = "SIGRTMAX"
	case sig > sigRTMin && sig <= sigRTMin+15:
		name = fmt.Sprintf("SIGRTMINPLUS%d", sig-sigRTMin)
	case sig > sigRTMin && sig < sigRTMax:
		name = fmt.Sprintf("SIGRTMAXMINUS%d", sigRTMax-sig)
	}
	return runtimeapi.Signal(runtimeapi.Signal_value["SIGNAL_"+name])
}

// stopSignal is the signal that stops the container (the CRI's, the
// image's, or SIGTERM), as recorded when it was created.
func stopSignal(name string) (unix.Signal, error) {
	if name == "" {
		return unix.SIGTERM, nil
	}
	return parseSignal(name)
}
