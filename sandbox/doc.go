// Package sandbox manages pod sandboxes: the namespaces a pod's containers
// share, its hostname, hosts and resolv.conf files, its /dev/shm, its cgroup
// parent, and its state on disk.
package sandbox
