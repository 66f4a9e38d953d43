package cri

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// maxID is the largest uid or gid a process can have: (uid_t)-1 means
// "leave unchanged" to the kernel's set*id calls and is nobody's id.
const maxID = 1<<32 - 2

// maxIDFile bounds what is read of an image's /etc/passwd or /etc/group
// (the image is untrusted; real ones are a few KiB).
const maxIDFile = 4 << 20

// looksNumeric matches what is a number, and so a uid or gid, never a name
// (as runc and Docker read USER): a sign is allowed so that "-1" is
// refused as an id rather than looked up as a name.
var looksNumeric = regexp.MustCompile(`^[+-]?[0-9]+$`)

// parseID reads s as a uid or gid (what says which, for errors). A name
// is not numeric; a number out of 0..maxID is an error, never a name.
func parseID(what, s string) (id uint32, numeric bool, err error) {
	if !looksNumeric.MatchString(s) {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > maxID {
		return 0, true, fmt.Errorf("%s %s is out of range (0 to %d): %w", what, s, maxID, errdefs.ErrInvalidArgument)
	}
	return uint32(n), true, nil
}

// checkID validates an id the CRI gives as a number.
func checkID(what string, n int64) (uint32, error) {
	if n < 0 || n > maxID {
		return 0, fmt.Errorf("%s %d is out of range (0 to %d): %w", what, n, maxID, errdefs.ErrInvalidArgument)
	}
	return uint32(n), nil
}

// processUser resolves the user the process runs as: run_as_user or
// run_as_username from the security context, else the image's User
// ("uid", "name", "uid:gid", "name:group"); names and the user's groups come
// from the container's own /etc/passwd and /etc/group, read inside the
// rootfs (R18). A number is always an id, never looked up as a name.
func processUser(sc *runtimeapi.LinuxContainerSecurityContext, imageUser, rootfs string) (specs.User, error) {
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return specs.User{}, fmt.Errorf("run_as_group without run_as_user or run_as_username: %w", errdefs.ErrInvalidArgument)
	}
	userPart, groupPart, _ := strings.Cut(imageUser, ":")
	switch {
	case sc.GetRunAsUser() != nil:
		uid, err := checkID("run_as_user", sc.GetRunAsUser().GetValue())
		if err != nil {
			return specs.User{}, err
		}
		userPart, groupPart = strconv.FormatUint(uint64(uid), 10), ""
	case sc.GetRunAsUsername() != "":
		userPart, groupPart = sc.GetRunAsUsername(), ""
	}
	passwd, err := readIDFile(rootfs, "/etc/passwd")
	if err != nil {
		return specs.User{}, err
	}
	var u specs.User
	uid, gid, name, err := lookupUser(passwd, userPart)
	if err != nil {
		return u, err
	}
	u.UID, u.GID = uid, gid
	strict := sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict
	var group [][]string
	if _, numeric, _ := parseID("gid", groupPart); (groupPart != "" && !numeric) || (name != "" && !strict) {
		if group, err = readIDFile(rootfs, "/etc/group"); err != nil {
			return u, err
		}
	}
	if groupPart != "" {
		if u.GID, err = lookupGroup(group, groupPart); err != nil {
			return u, err
		}
	}
	if g := sc.GetRunAsGroup(); g != nil {
		if u.GID, err = checkID("run_as_group", g.GetValue()); err != nil {
			return u, err
		}
	}
	// The primary group is listed too, as id -G and containerd show it;
	// the image's /etc/group adds the user's groups unless the policy is Strict.
	extra := []uint32{u.GID}
	if !strict {
		extra = append(extra, memberGroups(group, name, u.GID)...)
	}
	for _, g := range sc.GetSupplementalGroups() {
		gid, err := checkID("supplemental group", g)
		if err != nil {
			return u, err
		}
		extra = append(extra, gid)
	}
	slices.Sort(extra)
	u.AdditionalGids = slices.Compact(extra)
	return u, nil
}

// readIDFile reads and parses file (/etc/passwd or /etc/group) of the
// rootfs. A file the image lacks yields no entries, as for a scratch
// image; one that is not a regular file, or is larger than maxIDFile, is
// an error rather than read: a FIFO there would block, a device never end.
func readIDFile(rootfs, file string) ([][]string, error) {
	if rootfs == "" {
		return nil, nil
	}
	data, err := fsutil.ReadFileInRoot(rootfs, file, maxIDFile)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			err = fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("the image's %s cannot be used: %w", file, err)
	}
	return parseIDFile(data), nil
}

// parseIDFile splits the name:x:id:... lines of /etc/passwd or /etc/group
// into their fields; comments, blank lines and lines of fewer than four
// fields are skipped.
func parseIDFile(data []byte) [][]string {
	var entries [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxIDFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Split(line, ":"); len(f) >= 4 {
			entries = append(entries, f)
		}
	}
	return entries
}

// lookupUser turns a user name or number into uid and primary gid, and the
// name its groups are looked up by. A number is the uid itself; the passwd
// entry with that uid, if any, gives the primary gid (else 0, as in
// Docker) and the name. A name must be in passwd.
func lookupUser(passwd [][]string, user string) (uid, gid uint32, name string, err error) {
	if user == "" {
		user = "0"
	}
	n, numeric, err := parseID("uid", user)
	if err != nil {
		return 0, 0, "", err
	}
	for _, e := range passwd {
		id, idNumeric, err1 := parseID("uid", e[2])
		g, gNumeric, err2 := parseID("gid", e[3])
		if !idNumeric || !gNumeric || err1 != nil || err2 != nil {
			continue
		}
		if (numeric && id == n) || (!numeric && e[0] == user) {
			return id, g, e[0], nil
		}
	}
	if numeric {
		return n, 0, "", nil
	}
	return 0, 0, "", fmt.Errorf("user %q is not in the image's /etc/passwd: %w", user, errdefs.ErrInvalidArgument)
}

// lookupGroup turns a group name or number into a gid.
func lookupGroup(group [][]string, name string) (uint32, error) {
	if n, numeric, err := parseID("gid", name); numeric || err != nil {
		return n, err
	}
	for _, e := range group {
		if e[0] == name {
			if id, numeric, err := parseID("gid", e[2]); numeric && err == nil {
				return id, nil
			}
		}
	}
	return 0, fmt.Errorf("group %q is not in the image's /etc/group: %w", name, errdefs.ErrInvalidArgument)
}

// memberGroups lists the gids of the groups of /etc/group naming user as a
// member, besides the primary gid.
func memberGroups(group [][]string, user string, primary uint32) []uint32 {
	if user == "" {
		return nil
	}
	var gids []uint32
	for _, e := range group {
		id, numeric, err := parseID("gid", e[2])
		if !numeric || err != nil || id == primary {
			continue
		}
		if slices.Contains(strings.Split(e[3], ","), user) {
			gids = append(gids, id)
		}
	}
	return gids
}

// imageUser is the uid or the user name kubelet checks runAsNonRoot with,
// from an image's USER ("name", "uid", "uid:gid", "name:group"): exactly
// the uid processUser gives a container of the image when USER is
// numeric. A name, or a number no container can run as, is reported as a
// name, which kubelet cannot verify and so refuses for runAsNonRoot.
func imageUser(user string) (*runtimeapi.Int64Value, string) {
	if user == "" {
		return nil, ""
	}
	u, _, _ := strings.Cut(user, ":")
	if u == "" {
		return &runtimeapi.Int64Value{Value: 0}, "" // ":gid": root, as lookupUser reads it
	}
	if uid, numeric, err := parseID("uid", u); numeric && err == nil {
		return &runtimeapi.Int64Value{Value: int64(uid)}, ""
	}
	return nil, u
}
