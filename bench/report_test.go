package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

func TestMedianAndP90(t *testing.T) {
	for _, tc := range []struct {
		in          []float64
		median, p90 float64
	}{
		{[]float64{3, 1, 2}, 2, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 4},
		{[]float64{10, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 5.5, 9},
		{[]float64{7}, 7, 7},
	} {
		if got := Median(tc.in); got != tc.median {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.median)
		}
		if got := P90(tc.in); got != tc.p90 {
			t.Errorf("P90(%v) = %v, want %v", tc.in, got, tc.p90)
		}
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(P90(nil)) {
		t.Error("no values must give NaN")
	}
	in := []float64{3, 1, 2}
	Median(in)
	if in[0] != 3 {
		t.Error("Median sorted its input in place")
	}
}

func sampleRows() []Row {
	return Summarize([]Samples{
		{Runtime: Reference, Figure: "RunPodSandbox", Unit: "ms", Values: []float64{100, 200, 300}},
		{Runtime: Subject, Figure: "RunPodSandbox", Unit: "ms", Values: []float64{20, 50, 80}},
		{Runtime: Reference, Figure: "pull <&>", Unit: "ms", Values: []float64{1000}},
	})
}

func TestSummarizeRatio(t *testing.T) {
	rows := sampleRows()
	if len(rows) != 3 {
		t.Fatalf("got %d rows", len(rows))
	}
	if rows[0].Ratio != 0 || rows[2].Ratio != 0 {
		t.Errorf("ratio on a reference row or without a subject: %+v", rows)
	}
	if rows[1].Median != 50 || rows[1].Ratio != 0.25 || rows[1].Runs != 3 {
		t.Errorf("subject row = %+v, want median 50 ratio 0.25", rows[1])
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sampleRows()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("table has %d lines:\n%s", len(lines), b.String())
	}
	for i, want := range [][]string{
		{"containerd", "RunPodSandbox", "ms", "3", "200.00", "300.00", "-"},
		{"cri-mini", "RunPodSandbox", "ms", "3", "50.00", "80.00", "0.25"},
	} {
		if got := strings.Fields(lines[i+1]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("line %d = %q, want %q", i+1, got, want)
		}
	}
}

func curveSamples() []Samples {
	return []Samples{
		{Runtime: Subject, Figure: "ListContainers", Unit: "ms", Pods: 0, Values: []float64{1, 2, 3}},
		{Runtime: Reference, Figure: "ListContainers", Unit: "ms", Pods: 0, Values: []float64{4, 4}},
		{Runtime: Subject, Figure: "ListContainers", Unit: "ms", Pods: 110, Values: []float64{6, 5, 7}},
		{Runtime: Reference, Figure: "ListContainers", Unit: "ms", Pods: 110, Values: []float64{20, 30, 10}},
		// no value of Subject: no ratio, no cell
		{Runtime: Reference, Figure: "daemon idle CPU", Unit: "s/min", Pods: 0, Values: []float64{0.5}},
		// 0 is a ratio; a reference of 0 gives none
		{Runtime: Subject, Figure: "daemon idle CPU", Unit: "s/min", Pods: 110, Values: []float64{0}},
		{Runtime: Reference, Figure: "daemon idle CPU", Unit: "s/min", Pods: 110, Values: []float64{0.25}},
		{Runtime: Subject, Figure: "per-pod processes RSS", Unit: "MiB", Pods: 0, Values: []float64{0}},
		{Runtime: Reference, Figure: "per-pod processes RSS", Unit: "MiB", Pods: 0, Values: []float64{0}},
		// neither Subject nor Reference: left out
		{Runtime: "crio", Figure: "ListContainers", Unit: "ms", Pods: 30, Values: []float64{1}},
	}
}

func TestSummarizeCurve(t *testing.T) {
	rows := SummarizeCurve(curveSamples())
	type want struct {
		figure     string
		pods       int
		subj, ref  float64 // medians; -1: no cell
		ratio      float64 // -1: none
		subjectRun int
	}
	wants := []want{
		{"ListContainers", 0, 2, 4, 0.5, 3},
		{"ListContainers", 110, 6, 20, 0.3, 3},
		{"daemon idle CPU", 0, -1, 0.5, -1, 0},
		{"daemon idle CPU", 110, 0, 0.25, 0, 1},
		{"per-pod processes RSS", 0, 0, 0, -1, 1},
	}
	if len(rows) != len(wants) {
		t.Fatalf("got %d rows, want %d: %+v", len(rows), len(wants), rows)
	}
	median := func(s *Stat) float64 {
		if s == nil {
			return -1
		}
		return s.Median
	}
	for i, w := range wants {
		r := rows[i]
		q := -1.0
		if r.Ratio != nil {
			q = *r.Ratio
		}
		runs := 0
		if r.Subject != nil {
			runs = r.Subject.Runs
		}
		if r.Figure != w.figure || r.Pods != w.pods || median(r.Subject) != w.subj || median(r.Reference) != w.ref ||
			math.Abs(q-w.ratio) > 1e-9 || runs != w.subjectRun {
			t.Errorf("row %d = %+v (ratio %v), want %+v", i, r, q, w)
		}
	}
}

func TestWriteCurveTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteCurveTable(&b, SummarizeCurve(curveSamples())); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := [][]string{
		{"figure", "pods", "unit", "runs", "cri-mini", "containerd", "cri-mini/containerd"},
		{"ListContainers", "0", "ms", "3/2", "2.00", "4.00", "0.50"},
		{"ListContainers", "110", "ms", "3", "6.00", "20.00", "0.30"},
		{"daemon", "idle", "CPU", "0", "s/min", "1", "-", "0.50", "-"},
		{"daemon", "idle", "CPU", "110", "s/min", "1", "0.00", "0.25", "0.00"},
		{"per-pod", "processes", "RSS", "0", "MiB", "1", "0.00", "0.00", "-"},
	}
	if len(lines) != len(want) {
		t.Fatalf("table has %d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d = %q, want %q", i, got, w)
		}
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, Results{Figures: sampleRows(), Curve: SummarizeCurve(curveSamples())}); err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Figures) != 3 || back.Figures[1].Ratio != 0.25 || back.Figures[0].P90 != 300 {
		t.Errorf("figures round trip = %+v", back.Figures)
	}
	if len(back.Curve) != 5 || back.Curve[1].Pods != 110 || back.Curve[1].Reference.P90 != 30 ||
		back.Curve[2].Subject != nil || back.Curve[2].Ratio != nil || back.Curve[3].Ratio == nil || *back.Curve[3].Ratio != 0 {
		t.Errorf("curve round trip = %+v", back.Curve)
	}
	// The runtimes' stats are keyed by their names.
	var raw struct {
		Curve []map[string]json.RawMessage `json:"curve"`
	}
	if err := json.Unmarshal(b.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw.Curve[0][Subject]; !ok {
		t.Errorf("curve row without %q: %s", Subject, b.String())
	}
	b.Reset()
	if err := WriteJSON(&b, Results{Figures: sampleRows()}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "curve") {
		t.Errorf("a run without the curve writes one:\n%s", b.String())
	}
}

func TestWriteSVGIsWellFormed(t *testing.T) {
	var b bytes.Buffer
	if err := WriteSVG(&b, sampleRows()); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&b)
	rects := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	if rects != 3 {
		t.Errorf("%d bars, want 3", rects)
	}
}
