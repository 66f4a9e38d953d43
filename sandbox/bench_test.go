package sandbox

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkPodLifecycle measures Run + Stop + Remove of one pod: with the
// host's network (namespaces, files, shm only), with a CNI bridge network,
// and with a shared pid namespace, whose pause process's resident memory it
// reports.
func BenchmarkPodLifecycle(b *testing.B) {
	for i, variant := range []string{"hostnet", "cni", "sharedpid"} {
		b.Run(variant, func(b *testing.B) {
			m := newEnv(b, 10+i).manager(b)
			ctx := context.Background()
			var rss int
			for n := 0; b.Loop(); n++ {
				s := spec(fmt.Sprintf("bench-%d", n))
				s.HostNetwork = variant != "cni"
				s.SharedPID = variant == "sharedpid"
				p, err := m.Run(ctx, s)
				if err != nil {
					b.Fatal(err)
				}
				if p.PausePID != 0 && rss == 0 {
					rss = rssKiB(p.PausePID)
				}
				if err := m.Stop(ctx, p.ID); err != nil {
					b.Fatal(err)
				}
				if err := m.Remove(ctx, p.ID); err != nil {
					b.Fatal(err)
				}
			}
			if rss > 0 {
				b.ReportMetric(float64(rss), "pause-RSS-KiB")
			}
		})
	}
}

func rssKiB(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb
		}
	}
	return 0
}
