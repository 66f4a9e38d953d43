package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// explainCommand prints how container ID (or a unique prefix of it) was
// built: a shell script of stock-tool commands, or with --json the plan as
// data. It reads the container's state under --runroot, so it works
// whether the daemon runs or not.
func explainCommand(args []string, stdout, stderr io.Writer) int {
	asJSON := false
	var rest []string
	for _, a := range args {
		if a == "--json" || a == "-json" {
			asJSON = true
			continue
		}
		rest = append(rest, a)
	}
	cfg, ids, code := loadConfig("cri-mini explain", rest, stderr)
	if code >= 0 {
		return code
	}
	if len(ids) != 1 {
		fmt.Fprintf(stderr, "usage: cri-mini explain [--json] [flags] CONTAINER_ID\n")
		return 2
	}
	rt := &container.Runtime{StateDir: filepath.Join(cfg.RunRoot, "containers")}
	if cg, err := cgroups.New(cfg.CgroupDriver); err == nil {
		rt.Cgroups = cg
	}
	id, err := uniqueContainer(rt.StateDir, ids[0])
	if err == nil {
		err = printPlan(rt, id, asJSON, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cri-mini explain: %v\n", err)
		return 1
	}
	return 0
}

func printPlan(rt *container.Runtime, id string, asJSON bool, stdout io.Writer) error {
	plan, err := rt.Plan(id)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(plan)
	}
	_, err = io.WriteString(stdout, container.RenderShell(id, plan))
	return err
}

// uniqueContainer resolves an ID prefix among the containers in stateDir.
func uniqueContainer(stateDir, prefix string) (string, error) {
	entries, err := os.ReadDir(stateDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var found []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			if e.Name() == prefix {
				return prefix, nil
			}
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("container %q in %s: %w", prefix, stateDir, errdefs.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("container prefix %q matches %d containers (%s): %w", prefix, len(found), strings.Join(found, ", "), errdefs.ErrInvalidArgument)
}
