package stats

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cri-mini/cri-mini/internal/nspin"
)

// NetDevice is one interface's counters from /proc/net/dev.
type NetDevice struct {
	Name                                  string
	RxBytes, RxPackets, RxErrors, RxDrops uint64
	TxBytes, TxPackets, TxErrors, TxDrops uint64
}

// NetDevices reads /proc/net/dev as seen from inside the network namespace
// at nsPath; lo is left out.
func NetDevices(nsPath string) ([]NetDevice, error) {
	var data []byte
	if err := nspin.Run(nsPath, nspin.Net, func() (err error) {
		data, err = os.ReadFile("/proc/thread-self/net/dev")
		return err
	}); err != nil {
		return nil, fmt.Errorf("network usage: %w", err)
	}
	var devs []NetDevice
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		name, counters, ok := strings.Cut(sc.Text(), ":")
		name = strings.TrimSpace(name)
		f := strings.Fields(counters)
		if !ok || len(f) < 12 || name == "lo" {
			continue // the two header lines, and loopback
		}
		n := func(i int) uint64 {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			return v
		}
		// Fields: rx bytes packets errs drop fifo frame compressed multicast, tx bytes packets errs drop ...
		devs = append(devs, NetDevice{Name: name, RxBytes: n(0), RxPackets: n(1), RxErrors: n(2), RxDrops: n(3),
			TxBytes: n(8), TxPackets: n(9), TxErrors: n(10), TxDrops: n(11)})
	}
	return devs, nil
}
