// Package bench summarises benchmark samples taken from several CRI runtimes
// side by side: medians and 90th percentiles per figure, the ratio of
// cri-mini to containerd, as a text table, JSON and an SVG bar chart; and the
// cost curve to a full node (figures by number of resident pods) as a table
// and JSON.
package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strconv"
	"text/tabwriter"
)

// Subject and Reference are the runtimes whose ratio the report gives.
const (
	Subject   = "cri-mini"
	Reference = "containerd"
)

// Samples holds the values of one figure ("RunPodSandbox") measured on one
// runtime, in the figure's unit ("ms", "MiB").
type Samples struct {
	Runtime string
	Figure  string
	Unit    string
	Values  []float64
	// Pods is the number of pods resident while the values were taken:
	// the cost curve's level (SummarizeCurve); Summarize ignores it.
	Pods int
}

// Row is one line of the report.
type Row struct {
	Runtime string  `json:"runtime"`
	Figure  string  `json:"figure"`
	Unit    string  `json:"unit"`
	Runs    int     `json:"runs"`
	Median  float64 `json:"median"`
	P90     float64 `json:"p90"`
	// Ratio is Subject's median over Reference's for the figure, set on
	// the Subject's row when both were measured.
	Ratio float64 `json:"ratio,omitempty"`
}

// Median is the middle value (the mean of the two middle ones for an even
// count); NaN for no values.
func Median(v []float64) float64 {
	s := sorted(v)
	n := len(s)
	switch {
	case n == 0:
		return math.NaN()
	case n%2 == 1:
		return s[n/2]
	default:
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// P90 is the nearest-rank 90th percentile: the smallest value that at least
// 90% of the values do not exceed; NaN for no values.
func P90(v []float64) float64 {
	s := sorted(v)
	if len(s) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(0.9 * float64(len(s))))
	return s[rank-1]
}

func sorted(v []float64) []float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s
}

// Summarize makes the report's rows in the order the samples come, with the
// Subject/Reference ratio on the Subject's rows.
func Summarize(samples []Samples) []Row {
	rows := make([]Row, 0, len(samples))
	ref := map[string]float64{}
	for _, s := range samples {
		if s.Runtime == Reference && len(s.Values) > 0 {
			ref[s.Figure] = Median(s.Values)
		}
	}
	for _, s := range samples {
		r := Row{Runtime: s.Runtime, Figure: s.Figure, Unit: s.Unit, Runs: len(s.Values),
			Median: Median(s.Values), P90: P90(s.Values)}
		if d, ok := ref[s.Figure]; ok && s.Runtime == Subject && r.Runs > 0 {
			r.Ratio, _ = ratio(r.Median, d)
		}
		rows = append(rows, r)
	}
	return rows
}

// ratio is subject over reference, when the reference is positive.
func ratio(subject, reference float64) (float64, bool) {
	if !(reference > 0) || math.IsNaN(subject) {
		return 0, false
	}
	return subject / reference, true
}

// Stat is one runtime's summary of a figure.
type Stat struct {
	Runs   int     `json:"runs"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
}

// CurveRow is one line of the cost curve: a figure with Pods pods resident,
// on Subject and on Reference (nil where the runtime gave no value).
type CurveRow struct {
	Figure    string `json:"figure"`
	Pods      int    `json:"pods"`
	Unit      string `json:"unit"`
	Subject   *Stat  `json:"cri-mini,omitempty"`
	Reference *Stat  `json:"containerd,omitempty"`
	// Ratio is Subject's median over Reference's, where both were
	// measured and Reference's is positive (0 is a ratio: an idle CPU of
	// nothing against some).
	Ratio *float64 `json:"ratio,omitempty"`
}

// SummarizeCurve makes the cost curve's rows, one per figure and number of
// resident pods, in the order they first come in the samples. Runtimes other
// than Subject and Reference are left out.
func SummarizeCurve(samples []Samples) []CurveRow {
	type key struct {
		figure string
		pods   int
	}
	var rows []CurveRow
	index := map[key]int{}
	for _, s := range samples {
		if len(s.Values) == 0 || (s.Runtime != Subject && s.Runtime != Reference) {
			continue
		}
		k := key{s.Figure, s.Pods}
		i, ok := index[k]
		if !ok {
			i = len(rows)
			index[k] = i
			rows = append(rows, CurveRow{Figure: s.Figure, Pods: s.Pods, Unit: s.Unit})
		}
		st := &Stat{Runs: len(s.Values), Median: Median(s.Values), P90: P90(s.Values)}
		if s.Runtime == Subject {
			rows[i].Subject = st
		} else {
			rows[i].Reference = st
		}
	}
	for i, r := range rows {
		if r.Subject != nil && r.Reference != nil {
			if q, ok := ratio(r.Subject.Median, r.Reference.Median); ok {
				rows[i].Ratio = &q
			}
		}
	}
	return rows
}

// WriteCurveTable prints the cost curve as an aligned text table: a line per
// figure and number of resident pods, the runtimes' medians side by side.
// Runs is one count, or Subject's/Reference's where they differ.
func WriteCurveTable(w io.Writer, rows []CurveRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "figure\tpods\tunit\truns\t%s\t%s\t%s/%s\t\n", Subject, Reference, Subject, Reference)
	cell := func(s *Stat) string {
		if s == nil {
			return "-"
		}
		return fmt.Sprintf("%.2f", s.Median)
	}
	for _, r := range rows {
		var sr, rr int
		if r.Subject != nil {
			sr = r.Subject.Runs
		}
		if r.Reference != nil {
			rr = r.Reference.Runs
		}
		runs := strconv.Itoa(max(sr, rr))
		if r.Subject != nil && r.Reference != nil && sr != rr {
			runs = fmt.Sprintf("%d/%d", sr, rr)
		}
		q := "-"
		if r.Ratio != nil {
			q = fmt.Sprintf("%.2f", *r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Figure, r.Pods, r.Unit, runs, cell(r.Subject), cell(r.Reference), q)
	}
	return tw.Flush()
}

// Results is what results.json holds: the figures and the cost curve.
type Results struct {
	Figures []Row      `json:"figures"`
	Curve   []CurveRow `json:"curve,omitempty"`
}

// WriteTable prints the rows as an aligned text table.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "runtime\tfigure\tunit\truns\tmedian\tp90\t%s/%s\t\n", Subject, Reference)
	for _, r := range rows {
		ratio := "-"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.2f\t%.2f\t%s\t\n", r.Runtime, r.Figure, r.Unit, r.Runs, r.Median, r.P90, ratio)
	}
	return tw.Flush()
}

// WriteJSON writes the results as indented JSON.
func WriteJSON(w io.Writer, res Results) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// WriteSVG draws one group of horizontal bars per figure (one bar per
// runtime, its median, scaled to the largest median of the figure since the
// figures have different units), labelled with median and p90.
func WriteSVG(w io.Writer, rows []Row) error {
	const (
		width, labelW, barH, gap, top = 900, 260, 16, 14, 30
		barMax                        = width - labelW - 180
	)
	var figures []string
	byFigure := map[string][]Row{}
	for _, r := range rows {
		if _, ok := byFigure[r.Figure]; !ok {
			figures = append(figures, r.Figure)
		}
		byFigure[r.Figure] = append(byFigure[r.Figure], r)
	}
	colors := map[string]string{Subject: "#2b7bb9", Reference: "#d9822b"}
	height := top + gap
	for _, f := range figures {
		height += len(byFigure[f])*barH + gap
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(w, `<text x="8" y="18" font-size="13">%s vs %s: median (p90), bars scaled per figure</text>`+"\n", Subject, Reference)
	y := top
	for _, f := range figures {
		rs := byFigure[f]
		var max float64
		for _, r := range rs {
			if !math.IsNaN(r.Median) && r.Median > max {
				max = r.Median
			}
		}
		fmt.Fprintf(w, `<text x="8" y="%d">%s</text>`+"\n", y+barH-4, html.EscapeString(f))
		for _, r := range rs {
			length := 0.0
			if max > 0 && !math.IsNaN(r.Median) {
				length = r.Median / max * barMax
			}
			color, ok := colors[r.Runtime]
			if !ok {
				color = "#888888"
			}
			fmt.Fprintf(w, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelW, y+2, length, barH-4, color)
			fmt.Fprintf(w, `<text x="%.1f" y="%d">%s %.2f (%.2f) %s</text>`+"\n", float64(labelW)+length+4, y+barH-4,
				html.EscapeString(r.Runtime), r.Median, r.P90, html.EscapeString(r.Unit))
			y += barH
		}
		y += gap
	}
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}
