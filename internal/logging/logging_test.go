package logging_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/logging"
)

// logAll writes one record at each standard level and returns the levels
// that came out, parsing the JSON lines.
func logAll(t *testing.T, level string) []string {
	t.Helper()
	var buf bytes.Buffer
	l, err := logging.New(&buf, level, "json")
	if err != nil {
		t.Fatalf("New(level %q): %v", level, err)
	}
	l.Debug("d")
	l.Info("i")
	l.Warn("w")
	l.Error("e")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		got = append(got, rec["level"].(string))
	}
	return got
}

func TestLevels(t *testing.T) {
	all := []string{"DEBUG", "INFO", "WARN", "ERROR"}
	for _, tc := range []struct {
		level string
		want  []string
	}{
		{"debug", all},
		{"DEBUG", all},
		{"info", all[1:]},
		{"Info", all[1:]},
		{"warn", all[2:]},
		{"WARN", all[2:]},
		{"error", all[3:]},
		{"eRRoR", all[3:]},
		// slog's offset syntax passes through: INFO+4 is WARN.
		{"info+4", all[2:]},
	} {
		t.Run(tc.level, func(t *testing.T) {
			got := logAll(t, tc.level)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("at level %q logged %v, want %v", tc.level, got, tc.want)
			}
		})
	}
}

func TestBadLevel(t *testing.T) {
	for _, level := range []string{"", "verbose", "Verbose", "warning", "trace", "fatal", "info+", " info"} {
		for _, format := range []string{"json", "text", "yaml"} {
			var buf bytes.Buffer
			l, err := logging.New(&buf, level, format)
			if err == nil || l != nil {
				t.Errorf("New(%q, %q) = %v, %v; want an error and no logger", level, format, l, err)
				continue
			}
			// The level is checked first and the error quotes it as given.
			if want := `log level "` + level + `"`; !strings.Contains(err.Error(), want) {
				t.Errorf("New(%q, %q) error %q does not name %s", level, format, err, want)
			}
			if buf.Len() != 0 {
				t.Errorf("New(%q, %q) wrote %q", level, format, buf.String())
			}
		}
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct {
		format string
		check  func(t *testing.T, line string)
	}{
		{"json", checkJSON},
		{"", checkJSON},
		{"text", func(t *testing.T, line string) {
			if json.Valid([]byte(line)) {
				t.Errorf("text format wrote JSON: %s", line)
			}
			if !strings.HasPrefix(line, "time=") || !strings.Contains(line, ` level=WARN msg="disk low" free=42 path=/var`) {
				t.Errorf("text line %q lacks time, level, msg and attributes", line)
			}
		}},
	} {
		t.Run("format="+tc.format, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := logging.New(&buf, "info", tc.format)
			if err != nil {
				t.Fatal(err)
			}
			l.Debug("dropped", "x", 1)
			l.Warn("disk low", "free", 42, "path", "/var")
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if len(lines) != 1 || strings.Contains(buf.String(), "dropped") {
				t.Fatalf("want the one WARN record, got %q", buf.String())
			}
			tc.check(t, lines[0])
		})
	}
}

func checkJSON(t *testing.T, line string) {
	t.Helper()
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	if _, ok := rec[slog.TimeKey].(string); !ok {
		t.Errorf("record %v has no time", rec)
	}
	for k, want := range map[string]any{slog.LevelKey: "WARN", slog.MessageKey: "disk low", "free": float64(42), "path": "/var"} {
		if rec[k] != want {
			t.Errorf("record %v: %s = %v, want %v", rec, k, rec[k], want)
		}
	}
	if len(rec) != 5 {
		t.Errorf("record %v has %d keys, want time, level, msg and the two attributes", rec, len(rec))
	}
}

func TestBadFormat(t *testing.T) {
	// Unlike the level, the format is matched exactly.
	for _, format := range []string{"yaml", "logfmt", "JSON", "Text", " json"} {
		l, err := logging.New(&bytes.Buffer{}, "info", format)
		if err == nil || l != nil {
			t.Errorf("New(info, %q) = %v, %v; want an error and no logger", format, l, err)
			continue
		}
		if want := `log format "` + format + `": want json or text`; err.Error() != want {
			t.Errorf("New(info, %q) error %q, want %q", format, err, want)
		}
	}
}
