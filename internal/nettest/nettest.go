// Package nettest holds the test helpers that talk TCP from inside pinned
// network namespaces: a server standing in for a pod's container and a
// client that dials from a pod or from the host.
package nettest

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/nspin"
)

// Serve answers every connection to addr, listened on inside the network
// namespace pinned at nsPath, with msg, until the test ends.
func Serve(t testing.TB, nsPath, addr, msg string) {
	t.Helper()
	var ln net.Listener
	if err := nspin.Run(nsPath, nspin.Net, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, msg)
			c.Close()
		}
	}()
}

// Dial connects to addr from inside the network namespace at nsPath (the
// host's when nsPath is empty) and returns what the server says.
func Dial(nsPath, addr string) (string, error) {
	var got []byte
	do := func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err = io.ReadAll(c)
		return err
	}
	var err error
	if nsPath == "" {
		err = do()
	} else {
		err = nspin.Run(nsPath, nspin.Net, do)
	}
	return string(got), err
}
