package cri

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// eventServer serves svc on a unix socket and returns a client of it.
func eventServer(t *testing.T, svc *Service) runtimeapi.RuntimeServiceClient {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "cri.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(svc)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}

func subscribers(b *eventBroker) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

func waitSubscribers(t *testing.T, b *eventBroker, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for subscribers(b) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers, want %d", subscribers(b), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func event(id string, typ runtimeapi.ContainerEventType) *runtimeapi.ContainerEventResponse {
	return &runtimeapi.ContainerEventResponse{ContainerId: id, ContainerEventType: typ, CreatedAt: time.Now().UnixNano()}
}

// TestEventsFanOutAndEndCleanly: every stream gets every event in order; a
// client that goes away is unsubscribed; Close ends the other streams
// without an error.
func TestEventsFanOutAndEndCleanly(t *testing.T) {
	svc := NewService(Options{})
	client := eventServer(t, svc)
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	streams := make([]runtimeapi.RuntimeService_GetContainerEventsClient, 3)
	for i := range streams {
		ctx := context.Background()
		if i == 0 {
			ctx = ctx1
		}
		var err error
		if streams[i], err = client.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	waitSubscribers(t, svc.events, 3)
	types := []runtimeapi.ContainerEventType{runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT}
	for _, typ := range types {
		svc.events.send(event("c1", typ))
	}
	for i, stream := range streams {
		for _, typ := range types {
			ev, err := stream.Recv()
			if err != nil || ev.ContainerId != "c1" || ev.ContainerEventType != typ {
				t.Fatalf("stream %d: %v, %v; want %v of c1", i, ev, err, typ)
			}
		}
	}

	cancel1()
	waitSubscribers(t, svc.events, 2)
	if _, err := streams[0].Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("cancelled stream: %v", err)
	}

	svc.Close()
	for i, stream := range streams[1:] {
		if ev, err := stream.Recv(); err != io.EOF {
			t.Errorf("stream %d after Close: %v, %v; want io.EOF", i+1, ev, err)
		}
	}
	// A subscription after Close ends at once.
	late, err := client.GetContainerEvents(context.Background(), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Recv(); err != io.EOF {
		t.Errorf("stream opened after Close: %v, want io.EOF", err)
	}
}

// TestSlowSubscriberDropped: a subscriber that does not read is dropped
// when its buffer is full, without holding up the others, and learns why.
func TestSlowSubscriberDropped(t *testing.T) {
	b := newEventBroker()
	slow, fast := b.subscribe(), b.subscribe()
	for i := range eventBuffer + 10 {
		b.send(event("c", runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT))
		select {
		case <-fast.events: // the fast one keeps up
		default:
			t.Fatalf("event %d did not reach the fast subscriber", i)
		}
	}
	select {
	case <-slow.done:
	default:
		t.Fatal("the slow subscriber was not dropped")
	}
	if !errors.Is(slow.err, errdefs.ErrResourceExhausted) || len(slow.events) != eventBuffer {
		t.Errorf("dropped subscriber: err %v, %d events kept", slow.err, len(slow.events))
	}
	select {
	case <-fast.done:
		t.Error("the fast subscriber was dropped")
	default:
	}
	if subscribers(b) != 1 {
		t.Errorf("%d subscribers left, want the fast one", subscribers(b))
	}
}

// TestSlowClientDroppedThroughGRPC: a client that stops reading is dropped
// once gRPC's flow control and its buffer are full; it gets what was
// queued, then ResourceExhausted; publishing never blocks meanwhile.
func TestSlowClientDroppedThroughGRPC(t *testing.T) {
	svc := NewService(Options{})
	client := eventServer(t, svc)
	stream, err := client.GetContainerEvents(context.Background(), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, svc.events, 1)
	// 16 KiB events: 4096 of them (64 MiB) exceed any flow-control window
	// plus the buffer.
	big := &runtimeapi.PodSandboxStatus{Labels: map[string]string{"pad": strings.Repeat("x", 16<<10)}}
	for range 4 * eventBuffer {
		ev := event("c", runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
		ev.PodSandboxStatus = big
		svc.events.send(ev)
	}
	if subscribers(svc.events) != 0 {
		t.Fatal("the client that does not read is still subscribed")
	}
	n := 0
	for {
		_, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "fell 1024 container events behind") {
				t.Errorf("end of the dropped stream: %v", err)
			}
			break
		}
		n++
	}
	if n < eventBuffer || n >= 4*eventBuffer {
		t.Errorf("the dropped client received %d events, want its buffer's %d and more, not all", n, eventBuffer)
	}
}

// TestEventsAdvance: per container, events only move forward, and a
// deleted container's record is forgotten.
func TestEventsAdvance(t *testing.T) {
	b := newEventBroker()
	for _, tc := range []struct {
		typ  runtimeapi.ContainerEventType
		want bool
	}{
		{runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, true},
		{runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, true},  // exited right after start
		{runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, false}, // StartContainer's, late
		{runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, false}, // the exit watch's, again
		{runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, true},
	} {
		if got := b.advance("c", tc.typ); got != tc.want {
			t.Errorf("%v: send %v, want %v", tc.typ, got, tc.want)
		}
	}
	if len(b.last) != 0 {
		t.Errorf("records left after DELETED: %v", b.last)
	}
}
