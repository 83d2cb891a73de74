package helmtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// caInstall returns the rendered ca-install init container.
func caInstall(t *testing.T, r *rendered) *corev1.Container {
	t.Helper()
	dep := r.get(t, "Deployment", r.fullname).(*appsv1.Deployment)
	ic := container(t, dep.Spec.Template.Spec.InitContainers, "ca-install")
	if len(ic.Command) != 2 || ic.Command[0] != "/bin/sh" || ic.Command[1] != "-c" || len(ic.Args) != 1 {
		t.Fatalf("ca-install runs %v %v, want /bin/sh -c SCRIPT", ic.Command, ic.Args)
	}
	return ic
}

// secretVolume lays out files the way kubelet writes a Secret volume with
// fsGroup: a timestamped directory of 0440 files, a "..data" symlink to it,
// and one symlink per key.
func secretVolume(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_01_01_00_00_00.000000001")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(ts, name), data, 0o440); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(ts, name), 0o440); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runCAInstall runs the rendered script with the pod's paths replaced by
// secretDir and caDir.
func runCAInstall(t *testing.T, ic *corev1.Container, secretDir, caDir string) (string, error) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", ic.Args[0])
	cmd.Env = append(os.Environ(), "CA_SECRET_DIR="+secretDir, "CA_DIR="+caDir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func readCA(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range []string{"ca.crt", "ca.key"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = b
	}
	return out
}

// TestCAInstall runs the init container's script on a Secret volume laid
// out as kubelet does, then has the certs package (through `gatehouse ca
// issue`, which loads the CA with its permission checks) use the result.
func TestCAInstall(t *testing.T) {
	ic := caInstall(t, render(t, renderCases()[0]))

	// A rotated CA: the current one plus previous/<serial>.crt/.retire.
	rotated := filepath.Join(t.TempDir(), "ca")
	if out, err := exec.Command(gatehouse, "ca", "init", "--dir", rotated).CombinedOutput(); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	if out, err := exec.Command(gatehouse, "ca", "rotate", "--dir", rotated, "--overlap", "24h").CombinedOutput(); err != nil {
		t.Fatalf("ca rotate: %v\n%s", err, out)
	}
	rotatedFiles := readCA(t, rotated)
	prev, _ := filepath.Glob(filepath.Join(rotated, "previous", "*"))
	if len(prev) != 2 {
		t.Fatalf("after rotate, previous/ holds %v", prev)
	}
	for _, p := range prev {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rotatedFiles["previous."+filepath.Base(p)] = b
	}

	for _, tc := range []struct {
		name       string
		files      map[string][]byte
		wantErr    string // from the script
		wantBundle int    // CA certificates in the trust bundle
	}{
		{name: "fresh CA", files: readCA(t, testCADir), wantBundle: 1},
		{name: "rotated CA keeps the previous one trusted", files: rotatedFiles, wantBundle: 2},
		{name: "no key", files: map[string][]byte{"ca.crt": readCA(t, testCADir)["ca.crt"]}, wantErr: "ca.key is missing"},
		{name: "empty Secret", files: map[string][]byte{}, wantErr: "gatehouse ca init"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := secretVolume(t, tc.files)
			state := t.TempDir()
			caDir := filepath.Join(state, "ca")
			out, err := runCAInstall(t, ic, secret, caDir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(out, tc.wantErr) {
					t.Fatalf("want the script to fail with %q, got %v:\n%s", tc.wantErr, err, out)
				}
				if _, err := os.Stat(filepath.Join(caDir, "ca.crt")); err == nil {
					t.Fatal("a failed install left a CA behind")
				}
				return
			}
			if err != nil {
				t.Fatalf("ca-install: %v\n%s", err, out)
			}
			for name, want := range map[string]os.FileMode{".": 0o700, "ca.key": 0o600, "ca.crt": 0o644} {
				fi, err := os.Stat(filepath.Join(caDir, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != want {
					t.Errorf("%s: mode %04o, want %04o", name, fi.Mode().Perm(), want)
				}
			}
			// The certs package loads it and issues from it.
			bundle := filepath.Join(t.TempDir(), "bundle.crt")
			issue := exec.Command(gatehouse, "ca", "issue", "--dir", caDir, "--role", "edge", "--name", "edge",
				"--out", filepath.Join(t.TempDir(), "edge"), "--bundle-out", bundle)
			if out, err := issue.CombinedOutput(); err != nil {
				t.Fatalf("the installed CA does not load: %v\n%s", err, out)
			}
			b, err := os.ReadFile(bundle)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), "BEGIN CERTIFICATE"); n != tc.wantBundle {
				t.Errorf("trust bundle has %d CA certificates, want %d", n, tc.wantBundle)
			}
		})
	}

	// Why the copy: the Secret volume itself (0440, group-readable) is
	// refused by the certs package.
	t.Run("Secret volume as is is refused", func(t *testing.T) {
		secret := secretVolume(t, readCA(t, testCADir))
		out, err := exec.Command(gatehouse, "ca", "issue", "--dir", secret, "--role", "edge", "--name", "edge",
			"--out", filepath.Join(t.TempDir(), "edge")).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "open to group or others") {
			t.Fatalf("want the group-readable key refused, got %v:\n%s", err, out)
		}
	})
}

// TestReplicaBoots starts `gatehouse serve` the way the pod does — the
// rendered config and policies, the CA installed by the rendered ca-install
// script into the state directory — on loopback ports, and waits for
// /readyz. It proves the pieces the chart assembles make a ready replica.
func TestReplicaBoots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gatehouse serve")
	}
	for _, rc := range renderCases() {
		t.Run(rc.name, func(t *testing.T) {
			r := render(t, rc)
			cm := r.get(t, "ConfigMap", r.fullname).(*corev1.ConfigMap)
			cfgPath, policyDir := writeRendered(t, cm)
			localizeSecretFiles(t, cfgPath)
			state := t.TempDir()
			if out, err := runCAInstall(t, caInstall(t, r), secretVolume(t, readCA(t, testCADir)), filepath.Join(state, "ca")); err != nil {
				t.Fatalf("ca-install: %v\n%s", err, out)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, gatehouse, "serve", "--config", cfgPath, "--state-dir", state, "--policies", policyDir,
				"--listen", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
			cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
			cmd.WaitDelay = 10 * time.Second
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				cancel()
				_ = cmd.Wait()
				if t.Failed() {
					t.Logf("gatehouse serve stderr:\n%s", stderr.String())
				}
			}()
			admin := make(chan string, 1)
			go func() {
				re := regexp.MustCompile(`admin HTTP on (\S+)`)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if m := re.FindStringSubmatch(sc.Text()); m != nil {
						admin <- strings.TrimSuffix(m[1], ",")
					}
				}
				_, _ = io.Copy(io.Discard, stdout)
			}()
			var addr string
			select {
			case addr = <-admin:
			case <-ctx.Done():
				t.Fatal("gatehouse serve did not start listening")
			}
			for _, p := range []string{"/readyz", "/healthz"} {
				if err := waitOK(ctx, "http://"+addr+p); err != nil {
					t.Fatalf("%s: %v", p, err)
				}
			}
		})
	}
}

func waitOK(ctx context.Context, url string) error {
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status + ": " + string(body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last answer: %s", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// localizeSecretFiles points the secret files the rendered config names
// (store.redis.password_file, mounted from a Secret in the pod) at local
// files with the mode the Secret volume gives them, so the config boots
// outside the cluster.
func localizeSecretFiles(t *testing.T, cfgPath string) {
	t.Helper()
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	st, _ := doc["store"].(map[string]any)
	rd, _ := st["redis"].(map[string]any)
	pf, _ := rd["password_file"].(string)
	if pf == "" {
		return
	}
	local := filepath.Join(t.TempDir(), filepath.Base(pf))
	if err := os.WriteFile(local, []byte("test-password"), 0o400); err != nil {
		t.Fatal(err)
	}
	rd["password_file"] = local
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
