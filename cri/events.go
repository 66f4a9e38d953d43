package cri

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// eventBuffer is how many events a GetContainerEvents client may fall
// behind before it is dropped: enough for every container of a full node
// (110 pods) to stop and be deleted at once.
const eventBuffer = 1024

// eventBroker fans container events out to the GetContainerEvents streams.
// A stream that falls eventBuffer events behind is dropped rather than
// allowed to hold up the daemon; its client must list again, as after any
// broken stream.
type eventBroker struct {
	// publish serialises publishing, from taking an event's timestamp to
	// handing it to every subscriber, so each stream sees events in the
	// order of their timestamps and of the states they carry.
	publish sync.Mutex

	mu     sync.Mutex
	subs   map[*eventSub]struct{}
	closed bool
	// last is the furthest event sent per container (the event types go
	// created < started < stopped < deleted): a late STARTED after the
	// container's STOPPED, or a second STOPPED, is not sent.
	last map[string]runtimeapi.ContainerEventType
	stop context.CancelFunc // ends the exit watch
}

type eventSub struct {
	events chan *runtimeapi.ContainerEventResponse
	done   chan struct{} // closed when the broker drops the subscriber or closes
	err    error         // why done closed; nil when the broker closed
}

func newEventBroker() *eventBroker {
	return &eventBroker{subs: map[*eventSub]struct{}{}, last: map[string]runtimeapi.ContainerEventType{}, stop: func() {}}
}

func (b *eventBroker) subscribe() *eventSub {
	sub := &eventSub{events: make(chan *runtimeapi.ContainerEventResponse, eventBuffer), done: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(sub.done)
	} else {
		b.subs[sub] = struct{}{}
	}
	return sub
}

func (b *eventBroker) unsubscribe(sub *eventSub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, sub)
}

// listening reports whether any stream is open, so publishers can skip
// building events no one reads.
func (b *eventBroker) listening() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs) > 0
}

// send hands ev to every subscriber without waiting: one whose buffer is
// full is dropped.
func (b *eventBroker) send(ev *runtimeapi.ContainerEventResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		select {
		case sub.events <- ev:
		default:
			klog.InfoS("Dropping a container event stream that fell behind", "buffer", eventBuffer)
			sub.err = fmt.Errorf("the client fell %d container events behind and was dropped; list containers and subscribe again: %w",
				eventBuffer, errdefs.ErrResourceExhausted)
			close(sub.done)
			delete(b.subs, sub)
		}
	}
}

// advance records that an event of type typ for container id is due and
// reports whether it should be sent (it moves the container on).
func (b *eventBroker) advance(id string, typ runtimeapi.ContainerEventType) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if last, ok := b.last[id]; ok && last >= typ {
		return false
	}
	if typ == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
		delete(b.last, id)
	} else {
		b.last[id] = typ
	}
	return true
}

// streamsGauge counts the open event streams.
func (b *eventBroker) streamsGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cri_mini_container_event_streams",
		Help: "Open GetContainerEvents streams.",
	}, func() float64 {
		b.mu.Lock()
		defer b.mu.Unlock()
		return float64(len(b.subs))
	})
}

// close ends the exit watch and every stream.
func (b *eventBroker) close() {
	b.stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for sub := range b.subs {
		close(sub.done)
		delete(b.subs, sub)
	}
}

// GetContainerEvents streams container events until the client goes away
// or the daemon stops (both end the stream without an error).
func (s *Service) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	sub := s.events.subscribe()
	defer s.events.unsubscribe(sub)
	// The headers tell the client it is subscribed: events from now on reach it.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		// Events already taken are sent even when the subscriber was dropped
		// or the broker closed meanwhile.
		select {
		case ev := <-sub.events:
			if err := stream.Send(ev); err != nil {
				return err
			}
			continue
		default:
		}
		select {
		case ev := <-sub.events:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-sub.done:
			return sub.err
		case <-stream.Context().Done():
			return nil
		}
	}
}

// containerEvent publishes an event of container id, in pod podID, with
// the pod's status and the status of each of its containers as they are
// now. The CRI calls that change a container publish its CREATED, STARTED
// and DELETED; the exit watch publishes STOPPED.
func (s *Service) containerEvent(typ runtimeapi.ContainerEventType, id, podID string) {
	if podID == "" {
		return
	}
	s.events.publish.Lock()
	defer s.events.publish.Unlock()
	s.sendEvent(typ, id, podID)
}

// sendEvent is containerEvent under the publish lock.
func (s *Service) sendEvent(typ runtimeapi.ContainerEventType, id, podID string) {
	if !s.events.advance(id, typ) || !s.events.listening() {
		return
	}
	// The timestamp comes before the statuses are read: kubelet keeps a
	// pod's status only if its time is newer than what it has, so the time
	// must never be newer than the status it comes with.
	ev := &runtimeapi.ContainerEventResponse{ContainerId: id, ContainerEventType: typ, CreatedAt: time.Now().UnixNano()}
	if pod, err := s.sandboxes.Get(podID); err == nil {
		ev.PodSandboxStatus = podStatus(pod)
	} else {
		// kubelet skips such an event and relists; it happens when the pod
		// went away meanwhile.
		klog.V(2).InfoS("Container event without the pod's status", "container", id, "pod", podID, "err", err)
	}
	ev.ContainersStatuses = s.podContainerStatuses(podID)
	s.events.send(ev)
}

// podContainerStatuses is the status of every container of the pod, as
// ContainerStatus gives it (kubelet's evented PLEG takes them from pod
// statuses and events instead of asking for each).
func (s *Service) podContainerStatuses(podID string) []*runtimeapi.ContainerStatus {
	var out []*runtimeapi.ContainerStatus
	if s.containers == nil {
		return nil // a daemon without a container runtime serves pods only
	}
	for _, st := range s.podContainers(podID) {
		resp, err := s.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: st.ID})
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, resp.Status)
	}
	return out
}

// containerStopped publishes the STOPPED event of a container whose exit
// is recorded, unless it was published already or the container is gone.
// It returns the container's pod ("" when the container is gone).
func (s *Service) containerStopped(id string) string {
	s.events.publish.Lock()
	defer s.events.publish.Unlock()
	st, err := s.containers.State(id)
	if err != nil {
		if !errors.Is(err, errdefs.ErrNotFound) {
			klog.ErrorS(err, "Container state for its events", "container", id)
		}
		return ""
	}
	podID := st.Spec.Annotations[annoSandboxID]
	if st.Status == container.StatusStopped && podID != "" {
		s.sendEvent(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, id, podID)
	}
	return podID
}

// watchExits publishes the STOPPED event of each container as its exit is
// recorded, until the broker closes. A container removed before its exit
// was seen gets only its DELETED (the exit watch then finds it gone).
func (s *Service) watchExits() error {
	ctx, cancel := context.WithCancel(context.Background())
	exits, err := s.containers.WatchExits(ctx)
	if err != nil {
		cancel()
		return err
	}
	s.events.stop = cancel
	go func() {
		for id := range exits {
			s.containerStopped(id)
		}
	}()
	return nil
}

// Close ends the container event streams and the exit watch; call it
// before stopping the gRPC server, whose graceful stop waits for streams.
func (s *Service) Close() { s.events.close() }
