package fsutil

import "testing"

// BenchmarkReadKernelFile reads a short /proc file and one of some 1.5 KB
// (as a cgroup's memory.stat), the sizes the stats calls read.
func BenchmarkReadKernelFile(b *testing.B) {
	for _, p := range []string{"/proc/self/stat", "/proc/self/status"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ReadKernelFile(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
