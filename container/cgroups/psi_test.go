package cgroups

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPSIFiles reads the pressure files of a cgroup2 tree as the kernel
// writes them (memory and io have both lines; cpu's full line is all
// zero on kernels before 5.13 and at the root), averages included.
func TestPSIFiles(t *testing.T) {
	path := "/kubepods/pod1/ctr"
	m, dir := fakeV2(t, path)
	for file, content := range map[string]string{
		"cpu.pressure":    "some avg10=1.50 avg60=0.75 avg300=0.25 total=1500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"memory.pressure": "some avg10=12.34 avg60=5.00 avg300=1.01 total=987654\nfull avg10=10.00 avg60=4.50 avg300=0.99 total=876543\n",
		"io.pressure":     "some avg10=0.10 avg60=0.20 avg300=0.30 total=42\nfull avg10=0.01 avg60=0.02 avg300=0.03 total=21\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := m.Stats(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ got, want *PSI }{
		"cpu": {st.Pressure.CPU, &PSI{SomeMicros: 1500, SomeAvg: PSIAverages{1.5, 0.75, 0.25}}},
		"memory": {st.Pressure.Memory, &PSI{SomeMicros: 987654, FullMicros: 876543,
			SomeAvg: PSIAverages{12.34, 5, 1.01}, FullAvg: PSIAverages{10, 4.5, 0.99}}},
		"io": {st.Pressure.IO, &PSI{SomeMicros: 42, FullMicros: 21, SomeAvg: PSIAverages{0.1, 0.2, 0.3}, FullAvg: PSIAverages{0.01, 0.02, 0.03}}},
	} {
		if tc.got == nil || *tc.got != *tc.want {
			t.Errorf("%s pressure %+v, want %+v", name, tc.got, tc.want)
		}
	}
}
