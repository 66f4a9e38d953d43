package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	utilexec "k8s.io/utils/exec"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/image"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/internal/idprefix"
	"github.com/cri-mini/cri-mini/internal/randid"
	"github.com/cri-mini/cri-mini/sandbox"
)

func (s *Service) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cfg := req.GetConfig()
	md := cfg.GetMetadata()
	if md.GetName() == "" {
		return nil, fmt.Errorf("container config lacks metadata.name: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.GetImage().GetImage() == "" {
		return nil, fmt.Errorf("container %s: no image given: %w", md.GetName(), errdefs.ErrInvalidArgument)
	}
	if s.containers == nil || s.fs == nil {
		return nil, fmt.Errorf("this daemon has no container runtime or image store: %w", errdefs.ErrUnimplemented)
	}
	pod, err := s.sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if pod.State != sandbox.Ready {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", pod.ID, errdefs.ErrFailedPrecondition)
	}

	// The name is reserved, not locked: what follows reads the image and
	// builds the container, and must not hold up creates in other pods.
	id := randid.New()
	if holder, ok := s.names.reserve(ctrName{pod: pod.ID, name: md.GetName(), attempt: md.GetAttempt()}, id); !ok {
		return nil, fmt.Errorf("container %s (attempt %d) already exists in pod %s as %s: %w",
			md.GetName(), md.GetAttempt(), pod.ID, holder, errdefs.ErrAlreadyExists)
	}
	created := false
	defer func() {
		if !created {
			s.names.release(id)
		}
	}()

	target, err := s.pidTarget(pod.ID, cfg.GetLinux().GetSecurityContext().GetNamespaceOptions())
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", md.GetName(), err)
	}
	fsSpec, err := imageFS(pod, cfg)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", md.GetName(), err)
	}
	fs, err := s.fs.Prepare(id, fsSpec)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", md.GetName(), err)
	}
	release := func() {
		if err := s.fs.Release(id); err != nil {
			klog.ErrorS(err, "Roll back container rootfs", "container", id)
		}
	}
	img, volumes := fs.Image, imageVolumes(cfg.GetMounts(), fs.Volumes)
	spec, cgroup, err := containerSpec(specInput{ID: id, Config: cfg, Pod: pod, Image: imageConfigOf(img), ImageRef: img.ID,
		ImageName: statusImage(cfg.GetImage(), img), RepoDigest: firstNonEmpty(img.RepoDigests...),
		Rootfs: fs.Rootfs, Driver: s.config.CgroupDriver, ImageVolumes: volumes, Target: target,
		DeviceOwnership: s.config.DeviceOwnershipFromSecurityContext})
	if err == nil {
		err = s.injectCDI(spec, cfg)
	}
	if err == nil && pod.Spec.UserNS != nil {
		err = devicesAsBinds(spec, cfg.GetDevices())
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("container %s: %w", md.GetName(), err)
	}
	logPath, err := prepareLog(pod.Spec.LogDirectory, cfg.GetLogPath())
	if err != nil {
		release()
		return nil, fmt.Errorf("container %s: %w", md.GetName(), err)
	}
	if err := s.containers.Create(ctx, id, container.Bundle{Spec: spec, LogPath: logPath, LogDir: pod.Spec.LogDirectory, Tty: cfg.GetTty(),
		Stdin: cfg.GetStdin(), StdinOnce: cfg.GetStdinOnce(), CgroupPath: cgroup}); err != nil {
		release()
		return nil, fmt.Errorf("container %s: %w", md.GetName(), err)
	}
	if target != nil {
		// The target's namespace was joined by its init's pid: had the
		// init died meanwhile, the pid could have named another process.
		if err := s.targetRunning(target); err != nil {
			if derr := s.containers.Delete(ctx, id); derr != nil {
				klog.ErrorS(derr, "Roll back container", "container", id)
			}
			release()
			return nil, fmt.Errorf("container %s: %w", md.GetName(), err)
		}
	}
	created = true
	s.containerEvent(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, id, pod.ID)
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// pidTarget resolves the container whose pid namespace a config with
// NamespaceMode TARGET joins (kubectl debug --target): a running
// container of the same pod. Other modes have no target (nil).
func (s *Service) pidTarget(podID string, ns *runtimeapi.NamespaceOption) (*container.State, error) {
	if ns.GetPid() != runtimeapi.NamespaceMode_TARGET {
		return nil, nil
	}
	if ns.GetTargetId() == "" {
		return nil, fmt.Errorf("pid namespace mode TARGET without a target_id: %w", errdefs.ErrInvalidArgument)
	}
	target, err := s.containerState(ns.GetTargetId())
	if err != nil {
		return nil, fmt.Errorf("target of the pid namespace: %w", err)
	}
	if target.Spec.Annotations[annoSandboxID] != podID {
		return nil, fmt.Errorf("target container %s is not in pod %s: only a container of the same pod can be a target: %w", target.ID, podID, errdefs.ErrInvalidArgument)
	}
	return target, s.targetRunning(target)
}

// targetRunning checks that the target container still runs the init it
// ran when it was resolved.
func (s *Service) targetRunning(target *container.State) error {
	now, err := s.containers.State(target.ID)
	if err != nil {
		return fmt.Errorf("target container %s: %w", target.ID, err)
	}
	if now.Status != container.StatusRunning || now.Pid != target.Pid {
		return fmt.Errorf("target container %s is not running: its pid namespace cannot be joined: %w", target.ID, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// prepareLog makes the container's log file, logPath below the pod's
// logDir, and returns its full path ("" when either is unset: no log). A
// path that is absolute or climbs out of logDir is refused; the
// directories below logDir and the file are made without following any
// symlink, as the supervisor then opens the file.
func prepareLog(logDir, logPath string) (string, error) {
	if logPath == "" || logDir == "" {
		return "", nil
	}
	if !filepath.IsLocal(logPath) {
		return "", fmt.Errorf("log_path %q must be a relative path inside the pod's log directory: %w", logPath, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return "", fmt.Errorf("pod log directory: %w", err)
	}
	if sub := filepath.Dir(logPath); sub != "." {
		if err := fsutil.MkdirAllBeneath(logDir, sub, 0o755); err != nil {
			return "", fmt.Errorf("log directory: %w", err)
		}
	}
	f, err := fsutil.OpenBeneath(logDir, logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return "", fmt.Errorf("log: %w", err)
	}
	f.Close()
	return filepath.Join(logDir, logPath), nil
}

// containerState finds a container by id or unique id prefix.
func (s *Service) containerState(id string) (*container.State, error) {
	if id == "" {
		return nil, fmt.Errorf("container id is empty: %w", errdefs.ErrInvalidArgument)
	}
	if st, err := s.containers.State(id); err == nil {
		return st, nil
	} else if !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrInvalidArgument) {
		return nil, err
	}
	states, err := s.containers.List()
	if err != nil {
		return nil, err
	}
	return idprefix.Find(states, func(st *container.State) string { return st.ID }, id, "container")
}

func (s *Service) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	st, err := s.containerState(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if err := s.containers.Start(ctx, st.ID); err != nil {
		return nil, err
	}
	s.containerEvent(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, st.ID, st.Spec.Annotations[annoSandboxID])
	return &runtimeapi.StartContainerResponse{}, nil
}

func (s *Service) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	st, err := s.containerState(req.GetContainerId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.StopContainerResponse{}, nil // idempotent, as the CRI asks
	}
	if err != nil {
		return nil, err
	}
	if err := s.stopContainer(ctx, st, time.Duration(req.GetTimeout())*time.Second); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// stopContainer sends the container's stop signal (the CRI's, the image's,
// or SIGTERM), waits up to grace, then kills it. Stopping a stopped
// container does nothing, nor does one that goes while it is stopped (a
// create the signal ended, rolled back by its caller).
func (s *Service) stopContainer(ctx context.Context, st *container.State, grace time.Duration) error {
	if st.Status == container.StatusStopped {
		return nil
	}
	if grace > 0 {
		sig, err := stopSignal(st.Spec.Annotations[annoStopSignal])
		if err != nil {
			klog.InfoS("Unknown stop signal, using SIGTERM", "container", st.ID, "err", err)
			sig = syscall.SIGTERM
		}
		if err := s.containers.Kill(ctx, st.ID, sig); err != nil {
			return unlessGone(err)
		}
		wctx, cancel := context.WithTimeout(ctx, grace)
		_, err = s.containers.Wait(wctx, st.ID)
		cancel()
		if err == nil || errors.Is(err, errdefs.ErrNotFound) {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
	}
	if err := s.containers.Kill(ctx, st.ID, syscall.SIGKILL); err != nil {
		return unlessGone(err)
	}
	_, err := s.containers.Wait(ctx, st.ID)
	return unlessGone(err)
}

// unlessGone is err, but nil when it says the container no longer exists.
func unlessGone(err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	return err
}

func (s *Service) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	st, err := s.containerState(req.GetContainerId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.removeContainer(ctx, st.ID); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// removeContainer kills and deletes the container, then releases its rootfs.
func (s *Service) removeContainer(ctx context.Context, id string) error {
	podID := s.containerStopped(id) // an exit the watch has not published yet goes before DELETED
	if err := s.containers.Delete(ctx, id); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	s.names.release(id)
	s.containerEvent(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, id, podID)
	if s.fs == nil {
		return nil
	}
	return s.fs.Release(id)
}

// imageFS is what the container of cfg in pod mounts from the image store:
// its image, and its image volumes (their mounts, in order), each idmapped
// as its pod's user namespace asks.
func imageFS(pod *sandbox.Pod, cfg *runtimeapi.ContainerConfig) (image.FSSpec, error) {
	spec := image.FSSpec{Image: cfg.GetImage().GetImage(), IDMap: rootfsIDMap(pod)}
	for _, m := range cfg.GetMounts() {
		if m.GetImage() == nil {
			continue
		}
		idmap, err := mountIDMap(pod, m)
		if err != nil {
			return spec, err
		}
		spec.Volumes = append(spec.Volumes, image.VolumeSpec{Image: m.GetImage().GetImage(), IDMap: idmap, Path: m.GetContainerPath()})
	}
	return spec, nil
}

// imageVolumes maps the index of each image-volume mount to where its
// volume (of mounted, in the order of imageFS) is, and records the image's
// ID in the mount, which the container's status reports.
func imageVolumes(mounts []*runtimeapi.Mount, mounted []image.MountedVolume) map[int]string {
	volumes := map[int]string{}
	for i, m := range mounts {
		if m.GetImage() == nil {
			continue
		}
		volumes[i] = mounted[0].Path
		m.Image.ImageRef = mounted[0].ImageID
		mounted = mounted[1:]
	}
	return volumes
}

// stopPodContainers kills every container of the pod (the pod is stopping).
func (s *Service) stopPodContainers(ctx context.Context, podID string) error {
	if s.containers == nil {
		return nil
	}
	var errs []error
	for _, st := range s.podContainers(podID) {
		errs = append(errs, s.stopContainer(ctx, st, 0))
	}
	return errors.Join(errs...)
}

// removePodContainers removes every container of the pod.
func (s *Service) removePodContainers(ctx context.Context, podID string) error {
	if s.containers == nil {
		return nil
	}
	var errs []error
	for _, st := range s.podContainers(podID) {
		errs = append(errs, s.removeContainer(ctx, st.ID))
	}
	return errors.Join(errs...)
}

func (s *Service) podContainers(podID string) []*container.State {
	states, err := s.containers.List()
	if err != nil {
		klog.ErrorS(err, "List containers")
	}
	var out []*container.State
	for _, st := range states {
		if st.Spec.Annotations[annoSandboxID] == podID {
			out = append(out, st)
		}
	}
	return out
}

// collectOrphanRootfs releases the root filesystems (mount points and
// writable layers) of containers the runtime does not know (their creation
// was cut short by a crash, or a reboot emptied the run directory), and
// removes containers a crash left half created.
func (s *Service) collectOrphanRootfs() {
	if s.fs != nil {
		s.fs.CollectOrphans(func(id string) bool {
			_, err := s.containers.State(id)
			return !errors.Is(err, errdefs.ErrNotFound)
		})
	}
	// A create a crash cut short never answered kubelet, which will not ask
	// for that container again: it goes, with everything it had made.
	states, err := s.containers.List()
	if err != nil {
		klog.ErrorS(err, "List containers")
	}
	for _, st := range states {
		if st.Status == container.StatusCreating {
			klog.InfoS("Removing a container whose creation a crash cut short", "container", st.ID)
			if err := s.removeContainer(context.Background(), st.ID); err != nil {
				klog.ErrorS(err, "Remove half-created container", "container", st.ID)
			}
		}
	}
}

func criState(st *container.State) runtimeapi.ContainerState {
	switch st.Status {
	case container.StatusCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case container.StatusRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case container.StatusStopped:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func decodeMap(s string) map[string]string {
	m := map[string]string{}
	_ = json.Unmarshal([]byte(s), &m)
	return m
}

// imageSpec is the image spec of a container with the annotations a, as
// its config gave it: the image and the spec's annotations.
func imageSpec(a map[string]string) *runtimeapi.ImageSpec {
	spec := &runtimeapi.ImageSpec{Image: a[annoImage]}
	if a[annoImageAnnos] != "" {
		spec.Annotations = decodeMap(a[annoImageAnnos])
	}
	return spec
}

// imageRef is the image a container runs as kubelet shows it (a pod's
// imageID): its repository digest, as containerd reports it, or its ID for
// an image known by none.
func imageRef(annotations map[string]string) string {
	return firstNonEmpty(annotations[annoRepoDigest], annotations[annoImageRef])
}

func containerMetadata(st *container.State) *runtimeapi.ContainerMetadata {
	n := nameOf(st)
	return &runtimeapi.ContainerMetadata{Name: n.name, Attempt: n.attempt}
}

func (s *Service) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	st, err := s.containerState(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	a := st.Spec.Annotations
	status := &runtimeapi.ContainerStatus{
		Id:          st.ID,
		Metadata:    containerMetadata(st),
		State:       criState(st),
		CreatedAt:   unixNano(st.Created),
		StartedAt:   unixNano(st.Started),
		FinishedAt:  unixNano(st.Finished),
		ExitCode:    int32(st.ExitCode),
		Image:       imageSpec(a),
		ImageRef:    imageRef(a),
		ImageId:     a[annoImageRef],
		Labels:      decodeMap(a[annoLabels]),
		Annotations: decodeMap(a[annoAnnotation]),
		LogPath:     st.LogPath,
	}
	var mounts []*runtimeapi.Mount
	_ = json.Unmarshal([]byte(a[annoMounts]), &mounts)
	status.Mounts = mounts
	if p := st.Spec.Process; p != nil {
		u := p.User
		groups := make([]int64, 0, len(u.AdditionalGids))
		for _, g := range u.AdditionalGids {
			groups = append(groups, int64(g))
		}
		status.User = &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{Uid: int64(u.UID), Gid: int64(u.GID), SupplementalGroups: groups}}
	}
	if sig, err := stopSignal(a[annoStopSignal]); err == nil {
		status.StopSignal = criSignal(sig)
	}
	if st.Status == container.StatusStopped {
		status.Reason, status.Message = exitReason(st)
	}
	if r := st.Spec.Linux.Resources; r != nil {
		status.Resources = &runtimeapi.ContainerResources{Linux: criResources(r)}
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: status}
	if req.GetVerbose() {
		info, err := s.verboseInfo(st)
		if err != nil {
			return nil, fmt.Errorf("container %s: verbose info: %w", st.ID, err)
		}
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
}

// exitReason says why a stopped container stopped: the CRI's reason and a
// message for what the exit code does not tell. kubelet puts the message
// before the container's termination message in the pod's status, so an
// ordinary exit has none.
func exitReason(st *container.State) (reason, message string) {
	switch {
	case st.OOMKilled:
		reason = "OOMKilled"
	case st.ExitCode == 0:
		reason = "Completed"
	default:
		reason = "Error"
	}
	switch {
	case st.Signal > 0:
		message = fmt.Sprintf("killed by signal %s (%d)", unix.SignalName(syscall.Signal(st.Signal)), st.Signal)
	case st.ExitLost:
		message = "the exit status is lost: the container's init and its supervisor ended without recording it (exit code 255 stands for unknown)"
	}
	return reason, message
}

// maxVerboseInfo bounds the verbose info of ContainerStatus. The plan
// repeats the spec's command and environment, which an image may fill up
// to its config's cap (4 MiB, at most twice that encoded): past this size
// the plan is left out, so the answer stays well under a CRI message.
const maxVerboseInfo = 8 << 20

// verboseInfo is the runtime spec and, as `cri-mini explain --json`
// prints it, the plan: how cri-mini built the container, step by step.
func (s *Service) verboseInfo(st *container.State) (string, error) {
	v := map[string]any{"pid": st.Pid, "sandboxID": st.Spec.Annotations[annoSandboxID], "cgroupPath": st.CgroupPath,
		"namespaceOptions": namespaceOptions(st.Spec), "runtimeSpec": st.Spec}
	plan, err := s.containers.Plan(st.ID)
	if err != nil {
		v["planError"] = err.Error()
		return encodeJSON(v)
	}
	v["plan"] = plan
	info, err := encodeJSON(v)
	if err != nil || len(info) <= maxVerboseInfo {
		return info, err
	}
	delete(v, "plan")
	v["planError"] = fmt.Sprintf("the plan is left out: with it the info would be %d bytes; `cri-mini explain %s` prints it", len(info), st.ID)
	return encodeJSON(v)
}

// namespaceOptions is the CRI's account of the namespaces a container runs
// in, read from its spec: the pod's network and ipc namespaces or the
// node's, its pid namespace (its own, the pod's, a target container's by
// its init's /proc path, or the node's), its pod's user namespace or the
// node's.
func namespaceOptions(spec *specs.Spec) *runtimeapi.NamespaceOption {
	o := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE}
	for _, ns := range spec.Linux.Namespaces {
		switch ns.Type {
		case specs.NetworkNamespace:
			o.Network = runtimeapi.NamespaceMode_POD
		case specs.IPCNamespace:
			o.Ipc = runtimeapi.NamespaceMode_POD
		case specs.PIDNamespace:
			switch {
			case ns.Path == "":
				o.Pid = runtimeapi.NamespaceMode_CONTAINER
			case strings.HasPrefix(ns.Path, "/proc/"):
				o.Pid = runtimeapi.NamespaceMode_TARGET
			default:
				o.Pid = runtimeapi.NamespaceMode_POD
			}
		}
	}
	o.UsernsOptions = criUserNS(spec.Linux.UIDMappings, spec.Linux.GIDMappings)
	return o
}

// encodeJSON is json.Marshal without HTML escaping: a "<" of an image's
// environment stays one byte in a verbose status, not six.
func encodeJSON(v any) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

func (s *Service) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	states, err := s.containers.List()
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	var out []*runtimeapi.Container
	for _, st := range states {
		a := st.Spec.Annotations
		labels := decodeMap(a[annoLabels])
		switch {
		case f.GetId() != "" && !strings.HasPrefix(st.ID, f.GetId()):
			continue
		case f.GetState() != nil && f.GetState().GetState() != criState(st):
			continue
		case f.GetPodSandboxId() != "" && !strings.HasPrefix(a[annoSandboxID], f.GetPodSandboxId()):
			continue
		case !matchLabels(labels, f.GetLabelSelector()):
			continue
		}
		out = append(out, &runtimeapi.Container{
			Id:           st.ID,
			PodSandboxId: a[annoSandboxID],
			Metadata:     containerMetadata(st),
			Image:        imageSpec(a),
			ImageRef:     imageRef(a),
			ImageId:      a[annoImageRef],
			State:        criState(st),
			CreatedAt:    unixNano(st.Created),
			Labels:       labels,
			Annotations:  decodeMap(a[annoAnnotation]),
		})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}

func (s *Service) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	st, err := s.containerState(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if req.GetLinux() == nil {
		return nil, fmt.Errorf("container %s: no linux resources in the request: %w", st.ID, errdefs.ErrInvalidArgument)
	}
	if st.CgroupPath == "" || s.cgroups == nil {
		return nil, fmt.Errorf("container %s has no cgroup: %w", st.ID, errdefs.ErrFailedPrecondition)
	}
	if err := s.containers.Update(ctx, st.ID, linuxResources(req.GetLinux())); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

func (s *Service) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	st, err := s.containerState(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if err := s.containers.ReopenLog(st.ID); err != nil {
		return nil, err
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}

// maxExecSyncOutput bounds what ExecSync keeps of its output, stdout and
// stderr together, first come first kept: all of it fits, with the
// response's few bytes of framing, in the one message of at most
// maxMsgSize that kubelet accepts.
const maxExecSyncOutput = maxMsgSize - 4<<10

func (s *Service) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	st, err := s.runningContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if t := req.GetTimeout(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Second)
		defer cancel()
	}
	budget := &outputBudget{left: maxExecSyncOutput}
	stdout, stderr := &cappedBuffer{budget: budget}, &cappedBuffer{budget: budget}
	code, err := s.containers.Exec(ctx, st.ID, container.ExecOptions{Args: req.GetCmd(), Stdout: stdout, Stderr: stderr})
	if err != nil {
		return nil, err
	}
	// The CRI's response has no field to say so: the log does.
	if budget.dropped > 0 {
		klog.InfoS("ExecSync output over the cap was dropped", "container", st.ID, "cmd", req.GetCmd(), "cap", maxExecSyncOutput, "dropped", budget.dropped)
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout.buf, Stderr: stderr.buf, ExitCode: int32(code)}, nil
}

// outputBudget is the room left for an exec's output, shared by the
// buffers of its streams (written from two goroutines).
type outputBudget struct {
	mu      sync.Mutex
	left    int
	dropped int64
}

// take claims up to n bytes of the room and returns how many it got and
// how much room is left.
func (b *outputBudget) take(n int) (kept, left int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept = min(n, b.left)
	b.left -= kept
	b.dropped += int64(n - kept)
	return kept, b.left
}

// cappedBuffer keeps what its budget allows of what is written to it and
// drops the rest. It has no ReadFrom (as an embedded bytes.Buffer would):
// io.Copy into it goes through Write, where the cap is.
type cappedBuffer struct {
	buf    []byte
	budget *outputBudget
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	kept, left := b.budget.take(len(p))
	if n := len(b.buf) + kept; n > cap(b.buf) && n > growAll {
		// Big output: room for all it may still get, at once, rather
		// than ever larger copies left to the garbage collector.
		b.buf = append(make([]byte, 0, n+left), b.buf...)
	}
	b.buf = append(b.buf, p[:kept]...)
	return len(p), nil
}

// growAll is the output size past which a cappedBuffer grows to its cap.
const growAll = 1 << 20

func (s *Service) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	id, err := s.sessionTarget(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	req.ContainerId = id
	return s.stream.GetExec(req)
}

func (s *Service) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	id, err := s.sessionTarget(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	req.ContainerId = id
	return s.stream.GetAttach(req)
}

// runningContainer resolves id (or a unique prefix) to a running container.
func (s *Service) runningContainer(id string) (*container.State, error) {
	st, err := s.containerState(id)
	if err != nil {
		return nil, err
	}
	if st.Status != container.StatusRunning {
		return nil, fmt.Errorf("container %s is not running: %w", st.ID, errdefs.ErrFailedPrecondition)
	}
	return st, nil
}

// sessionTarget resolves the container of an exec or attach session, which
// must be running, to its full id.
func (s *Service) sessionTarget(id string) (string, error) {
	st, err := s.runningContainer(id)
	if err != nil {
		return "", err
	}
	if s.stream == nil {
		return "", fmt.Errorf("the streaming server is not running: %w", errdefs.ErrUnavailable)
	}
	return st.ID, nil
}

// execSession runs one exec session of the streaming server; a non-zero
// exit is reported as the exit error the server relays to the client.
func (s *Service) execSession(ctx context.Context, id string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	o := container.ExecOptions{Args: cmd, Tty: tty, Stdout: out, Resize: terminalSizes(ctx, resize)}
	if in != nil {
		o.Stdin = in
	}
	if errOut != nil {
		o.Stderr = errOut
	}
	code, err := s.containers.Exec(ctx, id, o)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %v exited with %d", cmd, code), Code: code}
	}
	return nil
}

// terminalSizes relays the streaming server's resize events to container/.
func terminalSizes(ctx context.Context, resize <-chan remotecommand.TerminalSize) <-chan container.TerminalSize {
	sizes := make(chan container.TerminalSize)
	go func() {
		defer close(sizes)
		for sz := range resize {
			select {
			case sizes <- container.TerminalSize{Width: sz.Width, Height: sz.Height}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return sizes
}
