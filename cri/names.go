package cri

import (
	"strconv"
	"sync"

	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container"
)

// ctrName is what makes a container unique to kubelet: its pod, name and
// attempt. A second create of the same one is AlreadyExists.
type ctrName struct {
	pod, name string
	attempt   uint32
}

// nameIndex holds the names of the containers that exist or are being
// created, as containerd's name index does: a create reserves its name
// before any work (no node-wide lock is held while it reads the image or
// builds the container, so creates of different containers run at once),
// keeps it while the container exists, and gives it back when it fails
// or the container is removed.
type nameIndex struct {
	mu    sync.Mutex
	byKey map[ctrName]string // name -> container ID
	byID  map[string]ctrName
}

func newNameIndex() *nameIndex {
	return &nameIndex{byKey: map[ctrName]string{}, byID: map[string]ctrName{}}
}

// reserve gives name to id, or returns the ID that holds it already.
func (x *nameIndex) reserve(name ctrName, id string) (holder string, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if holder, taken := x.byKey[name]; taken {
		return holder, false
	}
	x.byKey[name] = id
	x.byID[id] = name
	return "", true
}

// release frees the name id holds, if any.
func (x *nameIndex) release(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if name, ok := x.byID[id]; ok {
		delete(x.byKey, name)
		delete(x.byID, id)
	}
}

// nameOf is a container's name as its annotations record it.
func nameOf(st *container.State) ctrName {
	a := st.Spec.Annotations
	attempt, _ := strconv.ParseUint(a[annoAttempt], 10, 32)
	return ctrName{pod: a[annoSandboxID], name: a[annoName], attempt: uint32(attempt)}
}

// load reserves the names of the containers the runtime has (at start).
func (x *nameIndex) load(states []*container.State) {
	for _, st := range states {
		if holder, ok := x.reserve(nameOf(st), st.ID); !ok {
			klog.InfoS("Two containers have the same pod, name and attempt", "container", st.ID, "other", holder)
		}
	}
}
