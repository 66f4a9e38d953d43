package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// lines accepts n lines, then fails as a closed pipe does.
type lines struct {
	got []string
	n   int
}

func (l *lines) Write(p []byte) (int, error) {
	if len(l.got) == l.n {
		return 0, errors.New("broken pipe")
	}
	l.got = append(l.got, string(p))
	return len(p), nil
}

// TestNmeter runs nmeter as the node e2e suite does (`nmeter -d0 '%3t' |
// head -n1`): it prints the time with milliseconds and stops once its
// reader is gone.
func TestNmeter(t *testing.T) {
	at := time.Date(2026, 1, 2, 13, 4, 5, 678_900_000, time.UTC)
	now := func() time.Time { return at }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-d0", "%3t"}, "13:04:05.678\n"},
		{[]string{"-d", "0", "at %t!"}, "at 13:04:05!\n"},
		{[]string{"-d1", "%6t %1t"}, "13:04:05.678900 13:04:05.6\n"},
	} {
		out := &lines{n: 2}
		var stderr strings.Builder
		if code := nmeter(c.args, out, &stderr, now); code != 0 {
			t.Errorf("nmeter %q: exit %d: %s", c.args, code, stderr.String())
			continue
		}
		if len(out.got) != 2 || out.got[0] != c.want {
			t.Errorf("nmeter %q printed %q, want %q twice", c.args, out.got, c.want)
		}
	}
	for _, args := range [][]string{{}, {"-dx", "%t"}, {"-d", "%t"}, {"-d0", "%c"}, {"-d0", "%9t"}} {
		var stderr strings.Builder
		if code := nmeter(args, &lines{n: 1}, &stderr, now); code != 2 || stderr.Len() == 0 {
			t.Errorf("nmeter %q: exit %d, stderr %q; want usage error 2", args, code, stderr.String())
		}
	}
}
