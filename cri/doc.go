// Package cri translates CRI v1 requests (RuntimeService and ImageService)
// into calls on sandbox, container and image, and their results back into CRI
// responses and gRPC status codes. It does no work of its own.
package cri
