package cgroups

// FileWrite is one write a manager makes to set a limit: Value to File in
// the cgroup's directory of the hierarchy mounted at Root
// ("/sys/fs/cgroup/memory" on v1, "/sys/fs/cgroup" on v2). Both drivers
// list them with Writes(path, resources), from the same code that Update
// uses, so a plan that shows them cannot disagree with what is written.
type FileWrite struct {
	Root, File, Value string
	// Ancestors: the write goes to File of every cgroup above this one,
	// from the root down, not to its own (v2's cgroup.subtree_control,
	// which makes a controller's files appear below).
	Ancestors bool
}
