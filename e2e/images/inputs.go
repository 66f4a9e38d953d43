package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Programs are the static Go helper programs (e2e/cmd/...) the images carry.
type Programs struct {
	WebServer  string // websrv: nginx, hostnet-nginx and httpd
	NoNewPrivs string // nnp: setuid root, prints its effective uid
	Extra      string // bbextra: pgrep and ipcs
	Pause      string // pause
}

// BuildPrograms builds the helper programs of the module at moduleDir as
// static binaries (no cgo) into outDir.
func BuildPrograms(ctx context.Context, moduleDir, outDir string) (Programs, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", outDir+"/",
		"./e2e/cmd/websrv", "./e2e/cmd/nnp", "./e2e/cmd/bbextra", "./e2e/cmd/pause")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Programs{}, fmt.Errorf("build helper programs: %w\n%s", err, out)
	}
	return Programs{
		WebServer:  filepath.Join(outDir, "websrv"),
		NoNewPrivs: filepath.Join(outDir, "nnp"),
		Extra:      filepath.Join(outDir, "bbextra"),
		Pause:      filepath.Join(outDir, "pause"),
	}, nil
}

// DebianShell returns Debian's dynamic busybox (package busybox, built
// without FEATURE_SH_STANDALONE), downloaded with apt-get and unpacked under
// cacheDir on first use. It cannot be installed: it conflicts with
// busybox-static, which the tests need at /bin/busybox.
func DebianShell(ctx context.Context, cacheDir string) (string, error) {
	return DebianBinary(ctx, cacheDir, "busybox", "bin/busybox")
}

// DebianBinary returns the file at path in Debian package pkg, downloaded
// with apt-get (not installed) and unpacked under cacheDir on first use.
func DebianBinary(ctx context.Context, cacheDir, pkg, path string) (string, error) {
	dest := filepath.Join(cacheDir, pkg+"-deb")
	bin := filepath.Join(dest, path)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cacheDir, pkg+"-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)

	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %v: %w\n%s", name, args, err, out)
		}
		return nil
	}
	if err := run("apt-get", "download", pkg); err != nil {
		// A fresh machine may not have the package lists yet.
		if uerr := run("apt-get", "update", "-qq"); uerr != nil {
			return "", errors.Join(err, uerr)
		}
		if err := run("apt-get", "download", pkg); err != nil {
			return "", err
		}
	}
	debs, err := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if err != nil || len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: want one %s_*.deb in %s, found %v", pkg, pkg, tmp, debs)
	}
	if err := run("dpkg-deb", "-x", debs[0], "root"); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(tmp, "root", path)); err != nil {
		return "", fmt.Errorf("package %s: %w", pkg, err)
	}
	if err := os.Rename(filepath.Join(tmp, "root"), dest); err != nil {
		return "", err
	}
	return bin, nil
}
