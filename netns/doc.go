// Package netns creates, pins and removes pod network namespaces and attaches
// them to networks through CNI.
package netns
