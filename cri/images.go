package cri

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/image"
	"github.com/cri-mini/cri-mini/internal/errdefs"
)

func (s *Service) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	var auth *authn.AuthConfig
	if a := req.GetAuth(); a != nil {
		auth = &authn.AuthConfig{Username: a.GetUsername(), Password: a.GetPassword(), Auth: a.GetAuth(),
			IdentityToken: a.GetIdentityToken(), RegistryToken: a.GetRegistryToken()}
	}
	platform, err := image.PlatformFromAnnotations(req.GetImage().GetAnnotations())
	if err != nil {
		return nil, err
	}
	img, err := s.images.Pull(ctx, req.GetImage().GetImage(), image.PullOptions{Auth: auth, AuthServer: req.GetAuth().GetServerAddress(),
		Platform: platform})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}

func (s *Service) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	var imgs []*image.Image
	if ref := req.GetFilter().GetImage().GetImage(); ref != "" {
		img, err := s.images.Get(ref)
		if errors.Is(err, errdefs.ErrNotFound) {
			return &runtimeapi.ListImagesResponse{}, nil
		}
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	} else {
		var err error
		if imgs, err = s.images.List(); err != nil {
			return nil, err
		}
	}
	resp := &runtimeapi.ListImagesResponse{}
	for _, img := range imgs {
		resp.Images = append(resp.Images, criImage(img))
	}
	return resp, nil
}

// ImageStatus answers with no image, not an error, when it is unknown.
func (s *Service) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	img, err := s.images.Get(req.GetImage().GetImage())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: criImage(img)}
	if req.GetVerbose() {
		fields := map[string]any{"id": img.ID, "chainIDs": img.Layers, "config": img.Config, "verifications": img.Verifications}
		if img.ArtifactType != "" {
			fields["artifactType"] = img.ArtifactType
		}
		info, err := encodeJSON(fields)
		if err != nil {
			return nil, fmt.Errorf("image %s: verbose info: %w", img.ID, err)
		}
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
}

// RemoveImage is idempotent: an image already gone is not an error. A
// pinned image is refused (FailedPrecondition).
func (s *Service) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("remove image: no image named: %w", errdefs.ErrInvalidArgument)
	}
	if err := s.images.Remove(ref); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

func (s *Service) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	images, containers, err := s.images.FsInfo()
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	usage := func(u image.FsUsage) *runtimeapi.FilesystemUsage {
		return &runtimeapi.FilesystemUsage{Timestamp: now, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: u.Mountpoint},
			UsedBytes: &runtimeapi.UInt64Value{Value: u.Bytes}, InodesUsed: &runtimeapi.UInt64Value{Value: u.Inodes}}
	}
	return &runtimeapi.ImageFsInfoResponse{
		ImageFilesystems:     []*runtimeapi.FilesystemUsage{usage(images)},
		ContainerFilesystems: []*runtimeapi.FilesystemUsage{usage(containers)},
	}, nil
}

func criImage(img *image.Image) *runtimeapi.Image {
	out := &runtimeapi.Image{Id: img.ID, RepoTags: img.RepoTags, RepoDigests: img.RepoDigests, Size: img.Size,
		Spec: &runtimeapi.ImageSpec{Image: img.ID}, Pinned: img.Pinned}
	out.Uid, out.Username = imageUser(img.Config.Config.User)
	return out
}

// imageConfigOf is the part of an image's config a container inherits.
func imageConfigOf(img *image.Image) imageConfig {
	c := img.Config.Config
	return imageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir,
		User: c.User, StopSignal: c.StopSignal}
}

// statusImage is the image a container's status names: the one the pod
// asked for (kubelet creates containers from the image's ID and sends the
// pod's image as user_specified_image). Without it, the name the container
// was created from, or the image's first tag when that was its ID, as
// containerd reports.
func statusImage(spec *runtimeapi.ImageSpec, img *image.Image) string {
	if u := spec.GetUserSpecifiedImage(); u != "" {
		return u
	}
	if name := spec.GetImage(); (name != img.ID && name != strings.TrimPrefix(img.ID, "sha256:")) || len(img.RepoTags) == 0 {
		return name
	}
	return img.RepoTags[0]
}
