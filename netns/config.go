package netns

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/libcni"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// DefaultNetwork describes the bridge network used when the CNI config
// directory holds no configuration, so that a fresh node has pod networking.
type DefaultNetwork struct {
	Name   string // CNI network name; default "cri-mini"
	Bridge string // host bridge device; default "cri-mini0"
	Subnet string // pod subnet (IPv4 or IPv6 CIDR); default "10.88.0.0/16"
	// IPAMDataDir is where host-local records its allocations; empty means
	// the plugin's own default (/var/lib/cni/networks).
	IPAMDataDir string
}

func (d DefaultNetwork) withDefaults() DefaultNetwork {
	if d.Name == "" {
		d.Name = "cri-mini"
	}
	if d.Bridge == "" {
		d.Bridge = "cri-mini0"
	}
	if d.Subnet == "" {
		d.Subnet = "10.88.0.0/16"
	}
	return d
}

// defaultCNIVersion is the newest spec version that Debian 12's
// containernetworking-plugins (1.1.x) speak.
const defaultCNIVersion = "1.0.0"

// configList renders the default network: bridge with host-local IPAM,
// masquerade and a default route, and portmap for hostPorts (lo is Setup's
// own).
func (d DefaultNetwork) configList() (*libcni.NetworkConfigList, error) {
	prefix, err := netip.ParsePrefix(d.Subnet)
	if err != nil {
		return nil, fmt.Errorf("default network subnet %q: %w", d.Subnet, errdefs.ErrInvalidArgument)
	}
	if len(d.Bridge) > 15 {
		return nil, fmt.Errorf("default network bridge name %q is longer than 15 bytes: %w", d.Bridge, errdefs.ErrInvalidArgument)
	}
	defaultRoute := "0.0.0.0/0"
	if prefix.Addr().Is6() {
		defaultRoute = "::/0"
	}
	ipam := map[string]any{
		"type":   "host-local",
		"ranges": [][]map[string]string{{{"subnet": prefix.Masked().String()}}},
		"routes": []map[string]string{{"dst": defaultRoute}},
	}
	if d.IPAMDataDir != "" {
		ipam["dataDir"] = d.IPAMDataDir
	}
	conf := map[string]any{
		"cniVersion": defaultCNIVersion,
		"name":       d.Name,
		"plugins": []map[string]any{
			{
				"type":        "bridge",
				"bridge":      d.Bridge,
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam":        ipam,
			},
			{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	data, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("default network: %w", err)
	}
	return list, nil
}

// configExtensions are the file kinds read from the config directory.
var configExtensions = []string{".conf", ".conflist", ".json"}

// loadConfigDir returns the first configuration (in lexical order of file
// names) in dir, or nil when dir is missing or holds none.
func loadConfigDir(dir string) (*libcni.NetworkConfigList, string, error) {
	files, err := libcni.ConfFiles(dir, configExtensions)
	if err != nil {
		return nil, "", fmt.Errorf("read CNI config dir %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, "", nil
	}
	slices.Sort(files)
	file := files[0]
	var list *libcni.NetworkConfigList
	if filepath.Ext(file) == ".conflist" {
		list, err = libcni.NetworkConfFromFile(file)
	} else {
		list, err = loadSinglePluginConf(file)
	}
	if err != nil {
		return nil, file, fmt.Errorf("CNI config %s: %w", file, err)
	}
	return list, file, nil
}

// loadSinglePluginConf reads a .conf/.json file, which may hold a single
// plugin or (as some installers write) a whole list.
func loadSinglePluginConf(file string) (*libcni.NetworkConfigList, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var probe struct {
		Plugins json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, err
	}
	if probe.Plugins != nil {
		return libcni.NetworkConfFromBytes(data)
	}
	conf, err := libcni.NetworkPluginConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(conf)
}
