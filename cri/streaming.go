package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/sandbox"
)

// StartStreaming serves exec, attach and port-forward sessions (the URLs
// that the Exec, Attach and PortForward calls hand out) on addr, "host:0"
// picking a free port. It returns the address and a function that stops the
// server and ends open sessions.
func (s *Service) StartStreaming(addr string) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("stream address: %w", err)
	}
	cfg := streaming.DefaultConfig
	// The real address, so that a ":0" port shows in the URLs handed out.
	cfg.Addr = ln.Addr().String()
	srv, err := streaming.NewServer(cfg, streamRuntime{s})
	if err != nil {
		ln.Close()
		return "", nil, fmt.Errorf("streaming server: %w", err)
	}
	s.stream = srv
	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Streaming server stopped")
		}
	}()
	return cfg.Addr, func() { _ = httpSrv.Close() }, nil
}

func (s *Service) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	pod, err := s.sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if pod.State != sandbox.Ready {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", pod.ID, errdefs.ErrFailedPrecondition)
	}
	if s.stream == nil {
		return nil, fmt.Errorf("the streaming server is not running: %w", errdefs.ErrUnavailable)
	}
	req.PodSandboxId = pod.ID // a unique prefix becomes the full id
	return s.stream.GetPortForward(req)
}

// streamRuntime carries out the sessions of the streaming server.
type streamRuntime struct{ s *Service }

func (r streamRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return r.s.execSession(ctx, containerID, cmd, in, out, errOut, tty, resize)
}

func (r streamRuntime) Attach(ctx context.Context, containerID string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	o := container.AttachOptions{Stdin: in, Resize: terminalSizes(ctx, resize)}
	if out != nil {
		o.Stdout = out
	}
	if errOut != nil {
		o.Stderr = errOut
	}
	return r.s.containers.Attach(ctx, containerID, o)
}

// PortForward connects stream to port on the pod's loopback: the
// connection is made from a thread inside the pod's network namespace (the
// host's for host-network pods), IPv4 first, then IPv6.
func (r streamRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	pod, err := r.s.sandboxes.Get(podID)
	if err != nil {
		return err
	}
	var conn net.Conn
	dial := func() error {
		var errs []error
		for _, host := range []string{"127.0.0.1", "::1"} {
			// One literal address: the dial stays on this goroutine, and so
			// on the thread that is inside the pod's namespace.
			c, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
			if err == nil {
				conn = c
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	if pod.NetNS == "" {
		err = dial()
	} else {
		err = nspin.Run(pod.NetNS, nspin.Net, dial)
	}
	if err != nil {
		return fmt.Errorf("port-forward to port %d of pod %s: %w", port, podID, err)
	}
	defer conn.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(stream, conn)
		stream.Close()
	}()
	_, _ = io.Copy(conn, stream)
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	wg.Wait()
	return nil
}
