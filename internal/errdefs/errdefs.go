// Package errdefs names the kinds of failure that cri-mini's packages report,
// so that the CRI layer can map each to its gRPC code in one place. Packages
// wrap these with context: fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound).
package errdefs

import "errors"

var (
	// ErrNotFound: the named pod, container, image or exec session does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an object with the same identity is already there.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: the request itself is malformed or inconsistent.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the request is valid but the object is in the
	// wrong state for it (start of a running container, exec in a stopped one).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrResourceExhausted: a limit was hit (disk, memory, output size).
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrDeadlineExceeded: the operation ran past its timeout.
	ErrDeadlineExceeded = errors.New("deadline exceeded")
	// ErrUnavailable: a dependency (registry, CNI plugin) could not be reached.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthenticated: a registry refused the credentials (or their absence).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrUnimplemented: the feature is not supported on this host or build.
	ErrUnimplemented = errors.New("not implemented")
)
