// Command cri-mini is a Kubernetes container runtime: it serves the CRI on a
// unix socket and builds every container itself with system calls.
//
//	cri-mini [serve] [flags]   serve the CRI (the default)
//	cri-mini config [flags]    print the effective configuration as TOML
//	cri-mini image ...         import, pull, list or remove images in the store
//	cri-mini explain ID        print how a container was built, as shell commands
//	cri-mini version           print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/cri/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if container.RunInternal() {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: cri-mini [serve] [flags]   serve the CRI on --listen (default)
       cri-mini config [flags]    print the effective configuration (defaults, --config file, flags) as TOML
       cri-mini image ...         import, pull, list or remove images (cri-mini image help)
       cri-mini explain [--json] [flags] CONTAINER_ID
                                  print a shell script of stock tools that builds the container
                                  as cri-mini did (--json: the same plan as data)
       cri-mini version           print the version
The configuration flags (cri-mini config --help) may come before the command, after it or after its
arguments; give explain the daemon's --config (e.g. /etc/cri-mini/cri-mini.toml) to read its runroot.
`

func run(args []string, stdout, stderr io.Writer) int {
	global, cmd, args := splitCommand(args)
	switch cmd {
	case "version":
		fmt.Fprintf(stdout, "cri-mini %s\n", version)
		return 0
	case "image":
		if len(args) > 0 {
			// The subcommand first, then every flag, wherever it was given.
			args = append(append([]string{args[0]}, global...), args[1:]...)
		}
		return imageCommand(args, stdout, stderr)
	case "explain":
		return explainCommand(append(global, args...), stdout, stderr)
	case "serve", "config":
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "cri-mini: unknown command %q\n%s", cmd, usage)
		return 2
	}

	cfg, rest, code := loadConfig("cri-mini "+cmd, append(global, args...), stderr)
	if code >= 0 {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "cri-mini %s: unexpected arguments %q\n", cmd, rest)
		return 2
	}

	if cmd == "config" {
		out, err := cfg.Render()
		if err != nil {
			fmt.Fprintf(stderr, "cri-mini: %v\n", err)
			return 1
		}
		_, _ = stdout.Write(out)
		return 0
	}

	setVerbosity(cfg.Verbosity)
	defer klog.Flush()
	if err := serve(cfg); err != nil {
		fmt.Fprintf(stderr, "cri-mini: %v\n", err)
		return 1
	}
	return 0
}

// splitCommand finds the command among args: the first argument that is
// not a flag or a flag's value. The configuration flags may come before it
// (cri-mini --config F explain ID), as containerd and CRI-O take global
// flags, or after it; global are those before. No command means serve.
func splitCommand(args []string) (global []string, cmd string, rest []string) {
	fs := flag.NewFlagSet("cri-mini", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	config.RegisterFlags(fs)
	if fs.Parse(args) != nil || fs.NArg() == 0 {
		// Bad flags are reported by the command's own parse.
		if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
			return nil, args[0], args[1:]
		}
		return nil, "serve", args
	}
	n := len(args) - fs.NArg()
	if n > 0 && args[n-1] == "--" {
		return slices.Clip(args), "serve", nil // "--" ends the flags: nothing after is a command
	}
	return slices.Clip(args[:n]), fs.Arg(0), fs.Args()[1:]
}

// loadConfig parses the configuration flags of a command (defaults, then
// the --config file, then flags) and returns the positional arguments. The
// flags may also follow positional arguments (cri-mini explain ID --config
// F), up to a "--". A code of 0 or more means the command ends with it (-h,
// or bad flags).
func loadConfig(name string, args []string, stderr io.Writer) (config.Config, []string, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := config.RegisterFlags(fs)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return config.Config{}, nil, 0
			}
			return config.Config{}, nil, 2
		}
		n := len(args) - fs.NArg()
		if fs.NArg() == 0 || (n > 0 && args[n-1] == "--") {
			positional = append(positional, fs.Args()...)
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	cfg, err := flags.Load()
	if err != nil {
		fmt.Fprintf(stderr, "cri-mini: %v\n", err)
		return config.Config{}, nil, 2
	}
	return cfg, positional, -1
}

// setVerbosity hands -v to klog without exposing klog's other flags.
func setVerbosity(v int) {
	kfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(kfs)
	_ = kfs.Set("v", fmt.Sprint(v))
}
