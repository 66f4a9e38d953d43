// Command bbextra provides the two applets Debian's busybox lacks and critest
// runs inside its busybox image, chosen by the name it is called under:
//
//	pgrep PATTERN   print the IDs of processes whose name matches PATTERN
//	ipcs -m         list the System V shared memory segments
//
// Output follows procps and util-linux closely enough for critest's checks.
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
)

func main() {
	var code int
	switch name := filepath.Base(os.Args[0]); name {
	case "pgrep":
		code = pgrep(os.Args[1:], os.Stdout, os.Stderr)
	case "ipcs":
		code = ipcs(os.Args[1:], os.Stdout, os.Stderr)
	default:
		fmt.Fprintf(os.Stderr, "bbextra: unknown applet %q (want pgrep or ipcs)\n", name)
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
