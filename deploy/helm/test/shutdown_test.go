package helmtest

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// checkShutdown: replicas drain on SIGTERM (a positive --shutdown-delay
// while /readyz fails), and Kubernetes waits for the drain and the graceful
// stop before killing them.
func checkShutdown(t *testing.T, pod *corev1.PodSpec, gh *corev1.Container, args map[string]string) {
	delay, err := time.ParseDuration(args["--shutdown-delay"])
	if err != nil || delay <= 0 {
		t.Fatalf("--shutdown-delay %q (%v): want a positive drain delay on Kubernetes", args["--shutdown-delay"], err)
	}
	grace, err := time.ParseDuration(args["--shutdown-grace"])
	if err != nil || grace <= 0 {
		t.Fatalf("--shutdown-grace %q (%v)", args["--shutdown-grace"], err)
	}
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds")
	}
	if tgp := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; tgp < delay+grace+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %s leaves no margin over shutdown delay %s + grace %s", tgp, delay, grace)
	}
	if gh.ReadinessProbe == nil || gh.ReadinessProbe.HTTPGet == nil || gh.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %+v is not /readyz, which fails while draining", gh.ReadinessProbe)
	}
	// The binary accepts the rendered values: it gets past the flags to the
	// (missing) config file, exit 1 rather than 2.
	out, err := exec.Command(gatehouse, "serve", "--shutdown-delay", args["--shutdown-delay"], "--shutdown-grace", args["--shutdown-grace"],
		"--config", "/nonexistent/gatehouse.yaml").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || strings.Contains(string(out), "shutdown") {
		t.Errorf("gatehouse refuses the rendered shutdown flags: %v\n%s", err, out)
	}
}
