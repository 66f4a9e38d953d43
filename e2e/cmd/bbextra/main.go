// Command bbextra provides the applets Debian's busybox lacks and the tests
// run inside the busybox images, chosen by the name it is called under:
//
//	pgrep PATTERN     print the IDs of processes whose name matches PATTERN
//	ipcs -m           list the System V shared memory segments
//	nmeter -d MS FMT  print FMT every MS milliseconds; of busybox's nmeter
//	                  formats only %[N]t, the time of day with N decimals
//
// Output follows procps, util-linux and busybox closely enough for critest's
// checks and the node e2e suite's (which timestamps log lines with
// `nmeter -d0 '%3t' | head -n1`).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

func main() {
	var code int
	switch name := filepath.Base(os.Args[0]); name {
	case "pgrep":
		code = pgrep(os.Args[1:], os.Stdout, os.Stderr)
	case "ipcs":
		code = ipcs(os.Args[1:], os.Stdout, os.Stderr)
	case "nmeter":
		code = nmeter(os.Args[1:], os.Stdout, os.Stderr, time.Now)
	default:
		fmt.Fprintf(os.Stderr, "bbextra: unknown applet %q (want pgrep, ipcs or nmeter)\n", name)
		code = 2
	}
	os.Exit(code)
}

// pgrep exits 0 when a process matched, 1 when none did, 2 on bad usage.
func pgrep(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: pgrep PATTERN")
		return 2
	}
	re, err := regexp.Compile(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "pgrep: %v\n", err)
		return 2
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		fmt.Fprintf(stderr, "pgrep: %v\n", err)
		return 2
	}
	self := os.Getpid()
	code := 1
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue // exited meanwhile
		}
		if re.MatchString(strings.TrimSuffix(string(comm), "\n")) {
			fmt.Fprintln(stdout, pid)
			code = 0
		}
	}
	return code
}

// ipcs prints the segments of /proc/sysvipc/shm as util-linux's `ipcs -m`
// does. The headings hold no digits: critest looks for a segment ID as a
// bare substring of the output.
func ipcs(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || args[0] != "-m" {
		fmt.Fprintln(stderr, "usage: ipcs -m")
		return 2
	}
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		fmt.Fprintf(stderr, "ipcs: %v\n", err)
		return 1
	}
	defer f.Close()
	users := userNames()
	fmt.Fprint(stdout, "\n------ Shared Memory Segments --------\n")
	fmt.Fprintf(stdout, "%-10s %-10s %-10s %-10s %-10s %-10s %-12s\n", "key", "shmid", "owner", "perms", "bytes", "nattch", "status")
	sc := bufio.NewScanner(f)
	sc.Scan() // column names
	for sc.Scan() {
		// key shmid perms size cpid lpid nattch uid ...
		fld := strings.Fields(sc.Text())
		if len(fld) < 8 {
			continue
		}
		key, _ := strconv.ParseInt(fld[0], 10, 64)
		perms, _ := strconv.ParseUint(fld[2], 10, 32)
		owner := fld[7]
		if n, ok := users[owner]; ok {
			owner = n
		}
		fmt.Fprintf(stdout, "0x%08x %-10s %-10s %-10o %-10s %-10s %-12s\n", uint32(key), fld[1], owner, perms&0o777, fld[3], fld[6], "")
	}
	fmt.Fprintln(stdout)
	return 0
}

// userNames maps user IDs to names from /etc/passwd; none when it is absent.
func userNames() map[string]string {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return nil
	}
	names := map[string]string{}
	for line := range strings.Lines(string(data)) {
		if f := strings.Split(line, ":"); len(f) > 2 {
			names[f[2]] = f[0]
		}
	}
	return names
}

// nmeter prints its format line every -d milliseconds (busybox's default
// 1000; 0 means no pause) until a write fails, as when `head -n1` has read
// its line. Only the %t directive is known: %t is the time of day in
// seconds, %Nt with N decimals (1 to 6), as busybox's nmeter prints it.
func nmeter(args []string, stdout, stderr io.Writer, now func() time.Time) int {
	delay := time.Second
	if len(args) == 2 || len(args) == 3 {
		d, ok := strings.CutPrefix(args[0], "-d")
		if d == "" && ok && len(args) == 3 {
			d, args = args[1], args[1:]
		}
		ms, err := strconv.Atoi(d)
		if !ok || err != nil || ms < 0 {
			fmt.Fprintln(stderr, "usage: nmeter [-d MS] FORMAT")
			return 2
		}
		delay, args = time.Duration(ms)*time.Millisecond, args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: nmeter [-d MS] FORMAT")
		return 2
	}
	line, err := nmeterFormat(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "nmeter: %v\n", err)
		return 2
	}
	for {
		if _, err := fmt.Fprintln(stdout, line(now())); err != nil {
			return 0
		}
		time.Sleep(delay)
	}
}

// nmeterFormat compiles an nmeter format into a function of the time.
func nmeterFormat(format string) (func(time.Time) string, error) {
	var parts []func(time.Time) string
	for rest := format; rest != ""; {
		i := strings.IndexByte(rest, '%')
		if i < 0 {
			parts, rest = append(parts, literal(rest)), ""
			continue
		}
		parts = append(parts, literal(rest[:i]))
		rest = rest[i+1:]
		decimals := 0
		if rest != "" && rest[0] >= '1' && rest[0] <= '6' {
			decimals, rest = int(rest[0]-'0'), rest[1:]
		}
		if !strings.HasPrefix(rest, "t") {
			return nil, fmt.Errorf("format %q: only %%t and %%Nt (N 1 to 6) are known", format)
		}
		rest = rest[1:]
		layout := "15:04:05"
		if decimals > 0 {
			layout += "." + strings.Repeat("0", decimals)
		}
		parts = append(parts, func(t time.Time) string { return t.Format(layout) })
	}
	return func(t time.Time) string {
		var b strings.Builder
		for _, p := range parts {
			b.WriteString(p(t))
		}
		return b.String()
	}, nil
}

func literal(s string) func(time.Time) string { return func(time.Time) string { return s } }
