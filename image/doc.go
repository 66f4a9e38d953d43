// Package image pulls OCI and Docker images, keeps them in a content-addressed
// store, unpacks each layer once, and assembles container root filesystems
// from the layers (recipe step R1).
package image
