package envoy

import (
	"fmt"
	"net"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// The names the pod's Envoy config adds to envoy-unix-socket.yaml (see
// k8s/base/envoy.yaml): the probe and metrics listener and the admin
// cluster behind it.
const (
	PodHealthListener = "pod_health"
	AdminCluster      = "envoy_admin"
)

// ExtProcCluster is the cluster through which Envoy reaches tiergate's
// ext_proc server.
const ExtProcCluster = "tiergate_extproc"

func clusterEndpoint(bs *bootstrapv3.Bootstrap, name string) (*corev3.Address, error) {
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() != name {
			continue
		}
		eps := c.GetLoadAssignment().GetEndpoints()
		if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
			return nil, fmt.Errorf("cluster %s: want exactly one endpoint", name)
		}
		return eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress(), nil
	}
	return nil, fmt.Errorf("no cluster %s", name)
}

// ExtProcSocketPath returns the Unix socket path of the tiergate_extproc
// cluster of a bootstrap, so a deployment can be checked to point tiergate's
// --extproc-listen at the same place.
func ExtProcSocketPath(yamlBytes []byte) (string, error) {
	bs, err := decodeBootstrap(yamlBytes)
	if err != nil {
		return "", err
	}
	addr, err := clusterEndpoint(bs, ExtProcCluster)
	if err != nil {
		return "", err
	}
	if addr.GetPipe() == nil {
		return "", fmt.Errorf("cluster %s does not use a Unix socket", ExtProcCluster)
	}
	return addr.GetPipe().GetPath(), nil
}

// ClusterAddress returns a cluster's single endpoint as host:port.
func ClusterAddress(yamlBytes []byte, cluster string) (string, error) {
	bs, err := decodeBootstrap(yamlBytes)
	if err != nil {
		return "", err
	}
	addr, err := clusterEndpoint(bs, cluster)
	if err != nil {
		return "", err
	}
	sa := addr.GetSocketAddress()
	if sa == nil {
		return "", fmt.Errorf("cluster %s has no socket address", cluster)
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
}

// SameExceptPodListener reports whether the pod's bootstrap is base with
// only the pod_health listener and the envoy_admin cluster added.
func SameExceptPodListener(podYAML, baseYAML []byte) (bool, error) {
	pod, err := decodeBootstrap(podYAML)
	if err != nil {
		return false, fmt.Errorf("pod config: %w", err)
	}
	base, err := decodeBootstrap(baseYAML)
	if err != nil {
		return false, fmt.Errorf("base config: %w", err)
	}
	sr := pod.GetStaticResources()
	kept := sr.Listeners[:0:0]
	for _, l := range sr.GetListeners() {
		if l.GetName() != PodHealthListener {
			kept = append(kept, l)
		}
	}
	sr.Listeners = kept
	clusters := []*clusterv3.Cluster{}
	for _, c := range sr.GetClusters() {
		if c.GetName() != AdminCluster {
			clusters = append(clusters, c)
		}
	}
	sr.Clusters = clusters
	return proto.Equal(pod, base), nil
}
