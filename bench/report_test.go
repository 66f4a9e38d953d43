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

func TestWriteJSONRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, sampleRows()); err != nil {
		t.Fatal(err)
	}
	var back []Row
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 3 || back[1].Ratio != 0.25 || back[0].P90 != 300 {
		t.Errorf("round trip = %+v", back)
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
