// Package treetest describes a directory tree for tests that attack the
// host: a description taken before and after the attack shows whether
// anything below the directory was made, removed or changed.
package treetest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Describe lists every entry below dir, dir included: path, type and
// mode, owner, and a regular file's content.
func Describe(t testing.TB, dir string) string {
	t.Helper()
	var sb strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		sb.WriteString(p + " " + fi.Mode().String())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			fmt.Fprintf(&sb, " %d:%d", st.Uid, st.Gid)
		}
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sb.WriteString(" " + string(data))
		}
		sb.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// Owner is the uid:gid of the file at path (not following a last symlink).
func Owner(t testing.TB, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}
