package seccomp

import (
	"fmt"

	moby "github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container/caps"
)

// RuntimeDefaultFor returns the default container profile (Docker's, which
// containerd and CRI-O also use) for a container whose bounding set is
// bounding: some syscalls are allowed only with the capability that guards
// them (mount with CAP_SYS_ADMIN, for example), and rules that depend on the
// host's kernel version are resolved for the running kernel.
func RuntimeDefaultFor(bounding []string) (*specs.LinuxSeccomp, error) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: bounding}}}
	p, err := moby.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("seccomp: build the default profile: %w", err)
	}
	return p, nil
}

// RuntimeDefault returns the default container profile for the default
// capability set (caps.DefaultSet).
func RuntimeDefault() *specs.LinuxSeccomp {
	p, err := RuntimeDefaultFor(caps.DefaultSet())
	if err != nil {
		// Only a kernel release string that does not parse gets here; deny
		// everything rather than run unconfined.
		klog.ErrorS(err, "Falling back to a deny-all seccomp profile")
		return &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	}
	return p
}
