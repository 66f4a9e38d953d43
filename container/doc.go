// Package container builds and runs one container from an OCI runtime spec and
// a root filesystem, following the recipe's steps (R3-R19) as system calls,
// and supervises it: create, start, kill, wait, exec and delete.
package container
