package check

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/tiergate/tiergate/envoy"
	"github.com/tiergate/tiergate/policy"
)

// kustomizations are every kustomization root under k8s/ (components are
// rendered through the overlays that use them).
var kustomizations = []string{"../base", "../overlays/example", "../overlays/shared-budgets"}

// decoder decodes strictly: unknown and duplicate fields are errors.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	if err := scheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// rendered holds one kustomization's objects, decoded.
type rendered struct {
	dir     string
	objects []runtime.Object
}

func render(t *testing.T, dir string) *rendered {
	t.Helper()
	out, err := exec.Command("kubectl", "kustomize", dir).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr)
	}
	r := &rendered{dir: dir}
	for i, doc := range splitYAML(out) {
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: object %d does not decode strictly: %v\n%s", dir, i, err, doc)
		}
		if gvk.Kind == "" {
			t.Fatalf("%s: object %d has no kind", dir, i)
		}
		r.objects = append(r.objects, obj)
	}
	return r
}

func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func all[T runtime.Object](r *rendered) []T {
	var out []T
	for _, o := range r.objects {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func one[T runtime.Object](t *testing.T, r *rendered) T {
	t.Helper()
	got := all[T](r)
	if len(got) != 1 {
		var zero T
		t.Fatalf("%s: %d objects of type %T, want 1", r.dir, len(got), zero)
	}
	return got[0]
}

func TestManifests(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := render(t, dir)
			dep := one[*appsv1.Deployment](t, r)
			pod := dep.Spec.Template

			t.Run("the Deployment's selector matches its pods", func(t *testing.T) {
				sel := labels.SelectorFromSet(dep.Spec.Selector.MatchLabels)
				if !sel.Matches(labels.Set(pod.Labels)) {
					t.Fatalf("selector %v does not match pod labels %v", dep.Spec.Selector.MatchLabels, pod.Labels)
				}
			})
			t.Run("every Service, PDB, NetworkPolicy and PodMonitor selects the pods", func(t *testing.T) {
				for _, s := range all[*corev1.Service](r) {
					if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
						t.Errorf("Service %s selects %v", s.Name, s.Spec.Selector)
					}
				}
				for _, p := range all[*policyv1.PodDisruptionBudget](r) {
					if !labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) {
						t.Errorf("PDB %s selects %v", p.Name, p.Spec.Selector.MatchLabels)
					}
				}
				for _, n := range all[*networkingv1.NetworkPolicy](r) {
					if !labels.SelectorFromSet(n.Spec.PodSelector.MatchLabels).Matches(labels.Set(pod.Labels)) {
						t.Errorf("NetworkPolicy %s selects %v", n.Name, n.Spec.PodSelector.MatchLabels)
					}
				}
				for _, m := range all[*monitoringv1.PodMonitor](r) {
					if !labels.SelectorFromSet(m.Spec.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) {
						t.Errorf("PodMonitor %s selects %v", m.Name, m.Spec.Selector.MatchLabels)
					}
				}
			})
			containers := append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...)
			ports := map[string]int32{}
			numbers := map[int32]bool{}
			for _, c := range containers {
				for _, p := range c.Ports {
					ports[p.Name] = p.ContainerPort
					numbers[p.ContainerPort] = true
				}
			}
			portExists := func(p intstr.IntOrString) bool {
				if p.Type == intstr.String {
					_, ok := ports[p.StrVal]
					return ok
				}
				return numbers[p.IntVal]
			}
			t.Run("every probe, Service, NetworkPolicy and PodMonitor port exists on a container", func(t *testing.T) {
				for _, c := range containers {
					for name, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
						if pr == nil {
							continue
						}
						var p intstr.IntOrString
						switch {
						case pr.HTTPGet != nil:
							p = pr.HTTPGet.Port
						case pr.TCPSocket != nil:
							p = pr.TCPSocket.Port
						}
						if !portExists(p) {
							t.Errorf("%s %s probe: port %s is not a container port", c.Name, name, p.String())
						}
					}
				}
				for _, s := range all[*corev1.Service](r) {
					for _, sp := range s.Spec.Ports {
						if !portExists(sp.TargetPort) {
							t.Errorf("Service %s port %s: target %s is not a container port", s.Name, sp.Name, sp.TargetPort.String())
						}
					}
				}
				for _, n := range all[*networkingv1.NetworkPolicy](r) {
					for _, rule := range n.Spec.Ingress {
						for _, p := range rule.Ports {
							if p.Port != nil && !portExists(*p.Port) {
								t.Errorf("NetworkPolicy %s: port %s is not a container port", n.Name, p.Port.String())
							}
						}
					}
				}
				for _, m := range all[*monitoringv1.PodMonitor](r) {
					for _, e := range m.Spec.PodMetricsEndpoints {
						if e.Port == nil || !portExists(intstr.FromString(*e.Port)) {
							t.Errorf("PodMonitor %s: endpoint port %v is not a container port", m.Name, e.Port)
						}
					}
				}
			})
			t.Run("every mounted volume exists and every ConfigMap volume is rendered", func(t *testing.T) {
				vols := map[string]corev1.Volume{}
				for _, v := range pod.Spec.Volumes {
					vols[v.Name] = v
				}
				for _, c := range containers {
					for _, m := range c.VolumeMounts {
						if _, ok := vols[m.Name]; !ok {
							t.Errorf("%s mounts volume %q, which the pod does not have", c.Name, m.Name)
						}
					}
				}
				for _, v := range vols {
					if v.ConfigMap != nil && configMap(r, v.ConfigMap.Name) == nil {
						t.Errorf("volume %s names ConfigMap %s, which is not rendered", v.Name, v.ConfigMap.Name)
					}
				}
			})
			tg := container(t, containers, "tiergate")
			ev := container(t, containers, "envoy")
			t.Run("tiergate starts before Envoy and stops after it", func(t *testing.T) {
				if !slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "tiergate" }) ||
					tg.RestartPolicy == nil || *tg.RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Fatal("tiergate must be a native sidecar: an init container with restartPolicy: Always")
				}
				if tg.StartupProbe == nil {
					t.Fatal("without a startupProbe the kubelet starts Envoy before tiergate is ready")
				}
			})
			t.Run("Envoy's preStop drains it through tiergate drain, and the drain fits the grace period", func(t *testing.T) {
				dir, file := filepath.Split(flagValue(ev.Args, "--config-path"))
				cm := configMap(r, volume(pod, mountAt(t, ev, filepath.Clean(dir)).Name).ConfigMap.Name)
				admin, err := envoy.ClusterAddress([]byte(cm.Data[file]), envoy.AdminCluster)
				if err != nil {
					t.Fatal(err)
				}
				checkShutdown(t, pod, tg, ev, admin)
			})
			t.Run("both containers run locked down", func(t *testing.T) {
				psc := pod.Spec.SecurityContext
				if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Fatalf("pod securityContext %+v", psc)
				}
				for _, c := range []corev1.Container{tg, ev} {
					sc := c.SecurityContext
					if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
						sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
						sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
						t.Errorf("%s securityContext %+v", c.Name, sc)
					}
					if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
						t.Errorf("%s lacks cpu requests or a memory limit", c.Name)
					}
					if c.ReadinessProbe == nil || c.LivenessProbe == nil {
						t.Errorf("%s lacks a readiness or liveness probe", c.Name)
					}
				}
			})
			t.Run("the policy is mounted as a directory and passes tiergate validate", func(t *testing.T) {
				cfgPath := flagValue(tg.Args, "--config")
				dir, file := filepath.Split(cfgPath)
				m := mountAt(t, tg, filepath.Clean(dir))
				if m.SubPath != "" {
					t.Fatal("a subPath mount is never updated by the kubelet: live reload would never see a change")
				}
				cm := configMap(r, volume(pod, m.Name).ConfigMap.Name)
				data, ok := cm.Data[file]
				if !ok {
					t.Fatalf("ConfigMap %s has no key %s", cm.Name, file)
				}
				if _, err := policy.Load([]byte(data)); err != nil {
					t.Fatalf("the policy in ConfigMap %s is refused:\n%v", cm.Name, err)
				}
				if strings.HasSuffix(cm.Name, "-") || len(cm.Name) > len("tiergate-policy") {
					t.Errorf("the policy ConfigMap %q carries a hash suffix: edits would roll pods instead of reloading", cm.Name)
				}
			})
			t.Run("the Envoy config passes Envoy's schema and reaches tiergate where it listens", func(t *testing.T) {
				cfg := flagValue(ev.Args, "--config-path")
				dir, file := filepath.Split(cfg)
				m := mountAt(t, ev, filepath.Clean(dir))
				cm := configMap(r, volume(pod, m.Name).ConfigMap.Name)
				data := []byte(cm.Data[file])
				if err := envoy.ValidateBootstrap(data); err != nil {
					t.Fatalf("Envoy config in ConfigMap %s:\n%v", cm.Name, err)
				}
				pipe, err := envoy.ExtProcSocketPath(data)
				if err != nil {
					t.Fatal(err)
				}
				if want := "unix://" + pipe; flagValue(tg.Args, "--extproc-listen") != want {
					t.Fatalf("Envoy dials %s, tiergate listens on %s", want, flagValue(tg.Args, "--extproc-listen"))
				}
				sock := mountAt(t, tg, filepath.Dir(pipe))
				if envoySock := mountAt(t, ev, filepath.Dir(pipe)); envoySock.Name != sock.Name || volume(pod, sock.Name).EmptyDir == nil {
					t.Fatalf("the socket directory must be one emptyDir mounted in both containers")
				}
				if wsTarget, err := envoy.ClusterAddress(data, "tiergate_ws"); err != nil || flagValue(tg.Args, "--ws-listen") != wsTarget {
					t.Fatalf("Envoy routes WebSockets to %s (%v), tiergate's bridge listens on %s", wsTarget, err, flagValue(tg.Args, "--ws-listen"))
				}
				same, err := envoy.SameExceptPodListener(data, mustRead(t, "../../envoy/envoy-unix-socket.yaml"))
				if err != nil || !same {
					t.Fatalf("k8s/base/envoy.yaml has drifted from envoy/envoy-unix-socket.yaml beyond the pod listener (%v)", err)
				}
			})
		})
	}
}

// checkShutdown holds the pod's shutdown sequence together (docs/deployment.md,
// "Shutdown"): Envoy's preStop hook runs `tiergate drain` from a binary an init
// container installed on a volume both mount; the hook talks to Envoy's
// admin address (envoy.yaml's envoy_admin cluster) and tiergate's admin port; Envoy's drain time and
// tiergate's grace end within the hook's bound, and the bound plus the two
// exits within terminationGracePeriodSeconds.
func checkShutdown(t *testing.T, pod corev1.PodTemplateSpec, tg, ev corev1.Container, envoyAdmin string) {
	t.Helper()
	ls := ev.Lifecycle
	if ls == nil || ls.PreStop == nil || ls.PreStop.Exec == nil {
		t.Fatal("Envoy has no exec preStop hook: on SIGTERM it closes every connection at once")
	}
	cmd := ls.PreStop.Exec.Command
	if len(cmd) < 2 || cmd[1] != "drain" {
		t.Fatalf("Envoy's preStop runs %q, want tiergate drain", cmd)
	}
	hookMount := mountAt(t, ev, filepath.Dir(cmd[0]))
	if volume(pod, hookMount.Name).EmptyDir == nil {
		t.Fatalf("the hook's binary is on volume %s, not an emptyDir", hookMount.Name)
	}
	installed := false
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy == nil && flagValue(c.Args, "--install") == cmd[0] {
			m := mountAt(t, c, filepath.Dir(cmd[0]))
			installed = m.Name == hookMount.Name && slices.Contains(c.Args, "drain")
		}
	}
	if !installed {
		t.Fatalf("no init container runs tiergate drain --install %s on the volume Envoy mounts", cmd[0])
	}
	args := cmd[2:]
	if got := flagValue(args, "--envoy-admin"); got != "http://"+envoyAdmin {
		t.Errorf("the hook drains Envoy at %q, want its admin address http://%s (envoy.yaml's %s cluster)", got, envoyAdmin, envoy.AdminCluster)
	}
	_, tgPort, _ := strings.Cut(flagValue(tg.Args, "--admin-listen"), ":")
	if got := flagValue(args, "--tiergate-admin"); got != "http://127.0.0.1:"+tgPort {
		t.Errorf("the hook asks tiergate at %q, but tiergate's admin listens on port %s", got, tgPort)
	}
	timeout := duration(t, flagValue(args, "--timeout"))
	drainTime := duration(t, flagValue(ev.Args, "--drain-time-s")+"s")
	grace := duration(t, flagValue(tg.Args, "--shutdown-grace"))
	if drainTime >= timeout {
		t.Errorf("Envoy's drain time %v does not end within the hook's --timeout %v", drainTime, timeout)
	}
	if grace >= timeout {
		t.Errorf("tiergate's --shutdown-grace %v does not end within the hook's --timeout %v: sessions would be cut by Envoy's exit, not closed with 1001", grace, timeout)
	}
	tgps := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	if margin := 10 * time.Second; timeout+margin > tgps {
		t.Errorf("terminationGracePeriodSeconds %v leaves less than %v after the hook's %v for Envoy's and tiergate's exits", tgps, margin, timeout)
	}
}

func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func mountAt(t *testing.T, c corev1.Container, path string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) == path {
			return m
		}
	}
	t.Fatalf("%s mounts nothing at %s", c.Name, path)
	return corev1.VolumeMount{}
}

func volume(pod corev1.PodTemplateSpec, name string) corev1.Volume {
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	return corev1.Volume{}
}

func configMap(r *rendered, name string) *corev1.ConfigMap {
	for _, cm := range all[*corev1.ConfigMap](r) {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

// flagValue reads --name=value (or --name value) from args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPrometheusRuleGroupsPassPromtool hands the PrometheusRule's groups to
// promtool, which checks every expression parses and every field is known.
func TestPrometheusRuleGroupsPassPromtool(t *testing.T) {
	rule, path := writeRuleGroups(t, t.TempDir())
	out := runPromtool(t, "check", "rules", path)
	if !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", countRules(rule))) {
		t.Fatalf("promtool: %s", out)
	}
}

// TestAlertsFire runs testdata/alerts_test.yaml's cases with promtool test
// rules: each alert fires on the series its failure leaves behind, and
// stays quiet on healthy ones.
func TestAlertsFire(t *testing.T) {
	dir := t.TempDir()
	writeRuleGroups(t, dir) // the cases name rules.yaml beside them
	cases, err := os.ReadFile("testdata/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "alerts_test.yaml")
	if err := os.WriteFile(path, cases, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "test", "rules", path)
}

// writeRuleGroups writes the example overlay's PrometheusRule groups as a
// Prometheus rule file, dir/rules.yaml.
func writeRuleGroups(t *testing.T, dir string) (*monitoringv1.PrometheusRule, string) {
	t.Helper()
	rule := one[*monitoringv1.PrometheusRule](t, render(t, "../overlays/example"))
	groups, err := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, groups, 0o644); err != nil {
		t.Fatal(err)
	}
	return rule, path
}

// runPromtool runs promtool with args and returns its output; it fails the
// test when promtool fails.
func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: apt-get install prometheus (.ci/run does this)")
	}
	out, err := exec.Command(promtool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func countRules(r *monitoringv1.PrometheusRule) int {
	n := 0
	for _, g := range r.Spec.Groups {
		n += len(g.Rules)
	}
	return n
}

// TestRedisBudgetStoreIsWired renders the overlay that uses the
// redis-budget-store component: the policy's budget_store reads its
// password from a key of a Secret mounted (as a directory, read-only) into
// tiergate, and a NetworkPolicy selecting the pods lets them reach the
// Redis address, in its namespace, on its port.
func TestRedisBudgetStoreIsWired(t *testing.T) {
	r := render(t, "../overlays/shared-budgets")
	pod := one[*appsv1.Deployment](t, r).Spec.Template
	tg := container(t, append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...), "tiergate")
	cfgPath := flagValue(tg.Args, "--config")
	dir, file := filepath.Split(cfgPath)
	cm := configMap(r, volume(pod, mountAt(t, tg, filepath.Clean(dir)).Name).ConfigMap.Name)
	p, err := policy.Load([]byte(cm.Data[file]))
	if err != nil {
		t.Fatal(err)
	}
	store := p.BudgetStore()
	if store == nil {
		t.Fatal("the shared-budgets policy has no budget_store")
	}
	if len(p.Budgets()) == 0 {
		t.Error("the shared-budgets policy has no budgets to share")
	}

	t.Run("the password file is a key of a Secret mounted read-only into tiergate", func(t *testing.T) {
		if store.PasswordFile == "" {
			t.Fatal("budget_store.redis has no password_file")
		}
		m := mountAt(t, tg, filepath.Dir(store.PasswordFile))
		if !m.ReadOnly || m.SubPath != "" {
			t.Errorf("mount %s: readOnly %t subPath %q; want read-only, whole directory (a subPath is never updated on rotation)", m.Name, m.ReadOnly, m.SubPath)
		}
		v := volume(pod, m.Name)
		if v.Secret == nil {
			t.Fatalf("volume %s is not a Secret", m.Name)
		}
		var secret *corev1.Secret
		for _, s := range all[*corev1.Secret](r) {
			if s.Name == v.Secret.SecretName {
				secret = s
			}
		}
		if secret == nil {
			t.Fatalf("Secret %s is not rendered", v.Secret.SecretName)
		}
		key := filepath.Base(store.PasswordFile)
		if _, ok := secret.StringData[key]; !ok {
			if _, ok := secret.Data[key]; !ok {
				t.Errorf("Secret %s has no key %s", secret.Name, key)
			}
		}
	})

	t.Run("a NetworkPolicy lets the pods reach Redis", func(t *testing.T) {
		host, portText, err := net.SplitHostPort(store.Address)
		if err != nil {
			t.Fatal(err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			t.Fatal(err)
		}
		// A Service name: <service>.<namespace>.svc[.cluster.local].
		var namespace string
		if parts := strings.Split(host, "."); len(parts) >= 3 && parts[2] == "svc" {
			namespace = parts[1]
		}
		allowed := false
		for _, n := range all[*networkingv1.NetworkPolicy](r) {
			if !labels.SelectorFromSet(n.Spec.PodSelector.MatchLabels).Matches(labels.Set(pod.Labels)) {
				continue
			}
			for _, rule := range n.Spec.Egress {
				portOK := false
				for _, p := range rule.Ports {
					if p.Port != nil && p.Port.IntValue() == port && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
						portOK = true
					}
				}
				toOK := namespace == "" && len(rule.To) == 0
				for _, peer := range rule.To {
					if peer.NamespaceSelector != nil && labels.SelectorFromSet(peer.NamespaceSelector.MatchLabels).Matches(labels.Set{"kubernetes.io/metadata.name": namespace}) {
						toOK = true
					}
				}
				if portOK && toOK {
					allowed = true
				}
			}
		}
		if !allowed {
			t.Errorf("no NetworkPolicy egress rule for the pods reaches %s (namespace %q, port %d)", store.Address, namespace, port)
		}
	})
}
