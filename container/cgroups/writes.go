package cgroups

// FileWrite is one write a manager makes to set a limit: Value to File in
// the cgroup's directory of the hierarchy mounted at Root
// ("/sys/fs/cgroup/memory" on v1, "/sys/fs/cgroup" on v2). Both drivers
// list them with Writes(path, resources), from the same code that Update
// uses, so a plan that shows them cannot disagree with what is written.
type FileWrite struct {
	Root, File, Value string
}
