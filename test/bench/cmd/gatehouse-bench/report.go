package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/gatehouse-proxy/gatehouse/test/bench/xdsload"
)

// targetConcurrency is where the ext_authz targets are stated.
const targetConcurrency = 16

// authzSummary aggregates the rounds of one case at one concurrency.
type authzSummary struct {
	Case        string  `json:"case"`
	Concurrency int     `json:"concurrency"`
	Rounds      int     `json:"rounds"`
	RPS         float64 `json:"rps_median"`
	RPSMin      float64 `json:"rps_min"`
	RPSMax      float64 `json:"rps_max"`
	P50us       float64 `json:"p50_us_median"`
	P99us       float64 `json:"p99_us_median"`
	CPUusPerReq float64 `json:"server_cpu_us_per_request_median"`
	PeakRSS     int64   `json:"server_peak_rss_bytes_max"`
	Failures    int64   `json:"failures"`
	// Ratios to the no-op server in the same round (median, min, max).
	RPSRatio    [3]float64 `json:"rps_vs_noop"`
	P99Ratio    [3]float64 `json:"p99_vs_noop"`
	PolicyBytes int        `json:"policy_bytes"`
}

type target struct {
	Name  string `json:"name"`
	Want  string `json:"want"`
	Got   string `json:"got"`
	Holds *bool  `json:"holds"` // nil: not measured
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func stats3(xs []float64) [3]float64 {
	if len(xs) == 0 {
		return [3]float64{}
	}
	return [3]float64{median(xs), slices.Min(xs), slices.Max(xs)}
}

// pick returns the samples of one case and concurrency, by round.
func pick(samples []authzSample, name string, conc int) map[int]authzSample {
	out := map[int]authzSample{}
	for _, s := range samples {
		if s.Case == name && s.Concurrency == conc {
			out[s.Round] = s
		}
	}
	return out
}

// ratios pairs a case with a reference round by round.
func ratios(samples []authzSample, name, ref string, conc int, f func(authzSample) float64) []float64 {
	a, b := pick(samples, name, conc), pick(samples, ref, conc)
	var out []float64
	for r, s := range a {
		if rs, ok := b[r]; ok && f(rs) > 0 {
			out = append(out, f(s)/f(rs))
		}
	}
	return out
}

func rps(s authzSample) float64 { return s.RPS }
func p99(s authzSample) float64 { return s.P99us }

func summarize(cs []*authzCase, concs []int, samples []authzSample) []authzSummary {
	var out []authzSummary
	for _, conc := range concs {
		for _, c := range cs {
			byRound := pick(samples, c.Name, conc)
			if len(byRound) == 0 {
				continue
			}
			var r, p50s, p99s, cpu []float64
			sum := authzSummary{Case: c.Name, Concurrency: conc, Rounds: len(byRound), PolicyBytes: c.policy}
			for _, s := range byRound {
				r, p50s, p99s, cpu = append(r, s.RPS), append(p50s, s.P50us), append(p99s, s.P99us), append(cpu, s.CPUusPerReq)
				sum.PeakRSS = max(sum.PeakRSS, s.PeakRSS)
				sum.Failures += s.Failures
			}
			sum.RPS, sum.RPSMin, sum.RPSMax = median(r), slices.Min(r), slices.Max(r)
			sum.P50us, sum.P99us, sum.CPUusPerReq = median(p50s), median(p99s), median(cpu)
			sum.RPSRatio = stats3(ratios(samples, c.Name, "noop", conc, rps))
			sum.P99Ratio = stats3(ratios(samples, c.Name, "noop", conc, p99))
			out = append(out, sum)
		}
	}
	return out
}

func holds(ok bool) *bool { return &ok }

func authzTargets(cs []*authzCase, samples []authzSample) []target {
	c := targetConcurrency
	ratioTarget := func(name, want string, xs []float64, ok func(float64) bool) target {
		t := target{Name: name, Want: want}
		if len(xs) == 0 {
			t.Got = "not measured"
			return t
		}
		s := stats3(xs)
		t.Got = fmt.Sprintf("%.2fx (%.2f–%.2f)", s[0], s[1], s[2])
		t.Holds = holds(ok(s[0]))
		return t
	}
	ts := []target{
		ratioTarget("Rego only: RPS vs no-op", "≥ 0.70x", ratios(samples, "gatehouse-rego", "noop", c, rps), func(v float64) bool { return v >= 0.7 }),
		ratioTarget("RS256 JWT + Rego (same token): RPS vs no-op", "≥ 0.50x", ratios(samples, "gatehouse-jwt", "noop", c, rps), func(v float64) bool { return v >= 0.5 }),
		ratioTarget("RS256 JWT + Rego (same token): p99 vs no-op", "≤ 1.60x", ratios(samples, "gatehouse-jwt", "noop", c, p99), func(v float64) bool { return v <= 1.6 }),
		ratioTarget("RS256 JWT distinct tokens: RPS vs opa-envoy-plugin", "≥ 2.00x", ratios(samples, "gatehouse-jwt-distinct", "opa-jwt-distinct", c, rps), func(v float64) bool { return v >= 2 }),
	}
	// Peak RSS: the worst Gatehouse case against 1.5x the no-op's plus the
	// policy's size.
	noop := pick(samples, "noop", c)
	var noopPeak int64
	for _, s := range noop {
		noopPeak = max(noopPeak, s.PeakRSS)
	}
	rss := target{Name: "peak RSS under load (worst Gatehouse case)", Want: "≤ 1.5x no-op + policy"}
	if noopPeak == 0 {
		rss.Got = "not measured"
	} else {
		worst, worstName, worstLimit := int64(0), "", int64(0)
		for _, cs := range cs {
			if cs.Server != "gatehouse" || cs.Replicas > 1 {
				continue // a replica case's RSS is the sum over its processes
			}
			for _, s := range pick(samples, cs.Name, c) {
				if s.PeakRSS > worst {
					worst, worstName, worstLimit = s.PeakRSS, cs.Name, noopPeak*3/2+int64(cs.policy)
				}
			}
		}
		rss.Got = fmt.Sprintf("%s %.1f MB vs limit %.1f MB (no-op %.1f MB): %.2fx no-op", worstName, mb(worst), mb(worstLimit), mb(noopPeak), float64(worst)/float64(noopPeak))
		rss.Holds = holds(worst <= worstLimit)
	}
	ts = append(ts, rss)
	// The same split: anonymous memory (heap, stacks) is what load costs;
	// file-backed pages are the binary's code and data, shared and
	// reclaimable, and grow with the binary, not with requests.
	anon := target{Name: "anonymous RSS (heap, stacks) at end of load, worst Gatehouse case", Want: "(compare) ≤ 1.5x no-op + policy"}
	var noopAnon, noopFile int64
	for _, s := range noop {
		noopAnon, noopFile = max(noopAnon, s.AnonRSS), max(noopFile, s.FileRSS)
	}
	if noopAnon == 0 {
		anon.Got = "not measured"
	} else {
		worst, worstName, worstFile, worstLimit := int64(0), "", int64(0), int64(0)
		for _, cs := range cs {
			if cs.Server != "gatehouse" || cs.Replicas > 1 {
				continue
			}
			for _, s := range pick(samples, cs.Name, c) {
				if s.AnonRSS > worst {
					worst, worstName, worstFile, worstLimit = s.AnonRSS, cs.Name, s.FileRSS, noopAnon*3/2+int64(cs.policy)
				}
			}
		}
		anon.Got = fmt.Sprintf("%s %.1f MB vs %.1f MB (no-op %.1f MB): %.2fx; file-backed %.1f MB vs no-op %.1f MB", worstName, mb(worst), mb(worstLimit), mb(noopAnon), float64(worst)/float64(noopAnon), mb(worstFile), mb(noopFile))
	}
	ts = append(ts, anon)
	// The reference figures of opa-envoy-plugin, for comparison.
	info := func(name, ref string, xs []float64) target {
		t := target{Name: name, Want: "reference " + ref}
		if len(xs) == 0 {
			t.Got = "not measured"
			return t
		}
		s := stats3(xs)
		t.Got = fmt.Sprintf("%.2fx (%.2f–%.2f)", s[0], s[1], s[2])
		return t
	}
	ts = append(ts,
		info("opa-envoy-plugin Rego only: RPS vs no-op", "0.32x", ratios(samples, "opa-rego", "noop", c, rps)),
		info("opa-envoy-plugin RS256 JWT: RPS vs no-op", "0.11x", ratios(samples, "opa-jwt", "noop", c, rps)),
		info("opa-envoy-plugin RS256 JWT: p99 vs no-op", "5.8x", ratios(samples, "opa-jwt", "noop", c, p99)),
	)
	// Without the decision cache every request is evaluated: the cost of
	// Rego itself, for policies the cache cannot serve.
	ts = append(ts,
		info("Rego only, decision cache off: RPS vs no-op", "target 0.70x with cache", ratios(samples, "gatehouse-rego-nocache", "noop", c, rps)),
		info("RS256 JWT same token, decision cache off: RPS vs no-op", "target 0.50x with cache", ratios(samples, "gatehouse-jwt-nocache", "noop", c, rps)),
		info("RS256 JWT same token, decision cache off: p99 vs no-op", "target 1.60x with cache", ratios(samples, "gatehouse-jwt-nocache", "noop", c, p99)),
	)
	// Session cookies and replicas: side-by-side ratios (same round), no targets.
	cmp := func(name, a, b string, f func(authzSample) float64) target {
		t := target{Name: name, Want: "(compare)", Got: "not measured"}
		if xs := ratios(samples, a, b, c, f); len(xs) > 0 {
			s := stats3(xs)
			t.Got = fmt.Sprintf("%.2fx (%.2f–%.2f)", s[0], s[1], s[2])
		}
		return t
	}
	ts = append(ts,
		cmp("session cookie: RPS, redis store vs memory store", "gatehouse-session-redis", "gatehouse-session-memory", rps),
		cmp("session cookie: p99, redis store vs memory store", "gatehouse-session-redis", "gatehouse-session-memory", p99),
		cmp("session cookie (redis): RPS, 2 replicas vs 1", "gatehouse-session-redis-2x", "gatehouse-session-redis", rps),
		cmp("session cookie (redis): p99, 2 replicas vs 1", "gatehouse-session-redis-2x", "gatehouse-session-redis", p99),
		cmp("session cookie (memory) vs RS256 JWT same token: RPS", "gatehouse-session-memory", "gatehouse-jwt", rps),
	)
	return ts
}

func xdsTargets(runs []*xdsload.Result, streams int) []target {
	var ts []target
	note := ""
	if streams != 5000 {
		note = fmt.Sprintf(" [targets are for N=5000; N=%d here]", streams)
	}
	for _, mode := range []string{"sotw", "delta"} {
		var conv = map[string][]float64{}
		var connect, heap []float64
		var nacks, maxPush int64
		back := true
		n := 0
		for _, r := range runs {
			if r.Mode != mode {
				continue
			}
			n++
			connect = append(connect, r.Connect.Seconds())
			heap = append(heap, r.HeapPerStream/1024)
			nacks += r.NACKs
			back = back && r.GoroutinesBack
			for _, c := range r.Changes {
				conv[c.Kind] = append(conv[c.Kind], c.Converge.Seconds())
				maxPush = max(maxPush, c.MaxPushes)
			}
		}
		if n == 0 {
			continue
		}
		secs := func(name, want string, xs []float64, limit float64) target {
			m := median(xs)
			t := target{Name: mode + ": " + name + note, Want: want, Got: fmt.Sprintf("%.3f s", m)}
			if limit > 0 {
				t.Holds = holds(m <= limit)
			}
			return t
		}
		ts = append(ts,
			secs("config edit reaches all streams", "≤ 0.4 s", conv["config"], 0.4),
			secs("endpoint change reaches affected streams", "(no target)", conv["endpoints"], 0),
			secs("cert rotation reaches all streams", "≤ 0.3 s", conv["rotation"], 0.3),
			target{Name: mode + ": server heap per stream", Want: "≤ 40 KB", Got: fmt.Sprintf("%.1f KB", median(heap)), Holds: holds(median(heap) <= 40)},
			secs("initial connect of all streams", "≤ 4 s", connect, 4),
			target{Name: mode + ": NACKs / most pushes per stream per change", Want: "0 NACK loops", Got: fmt.Sprintf("%d NACKs, ≤ %d pushes", nacks, maxPush), Holds: holds(nacks == 0 && maxPush <= 5)},
			target{Name: mode + ": goroutines back to baseline after disconnect", Want: "yes", Got: fmt.Sprint(back), Holds: holds(back)},
		)
	}
	return ts
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func verdict(h *bool) string {
	switch {
	case h == nil:
		return "—"
	case *h:
		return "HOLDS"
	default:
		return "MISSED"
	}
}

func printTargets(w io.Writer, ts []target) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\twant\tmeasured\t")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Want, t.Got, verdict(t.Holds))
	}
	tw.Flush()
}

func printAuthz(w io.Writer, ar *authzReport, f flags) {
	fmt.Fprintf(w, "\n## ext_authz (%d rounds × %s per server and concurrency; ratios are to the no-op server in the same round: median (min–max))\n\n", f.rounds, f.duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tc\tRPS\tspread\tRPS ×no-op\tp50 µs\tp99 µs\tp99 ×no-op\tCPU µs/req\tpeak RSS MB\tfailures\t")
	for _, s := range ar.Summary {
		spread := 0.0
		if s.RPS > 0 {
			spread = (s.RPSMax - s.RPSMin) / s.RPS * 100
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t±%.0f%%\t%s\t%.0f\t%.0f\t%s\t%.1f\t%.1f\t%d\t\n", s.Case, s.Concurrency, s.RPS, spread/2,
			ratioCell(s.RPSRatio), s.P50us, s.P99us, ratioCell(s.P99Ratio), s.CPUusPerReq, mb(s.PeakRSS), s.Failures)
	}
	tw.Flush()
	for name, why := range ar.Skipped {
		fmt.Fprintf(w, "SKIPPED %s: %s\n", name, why)
	}
	fmt.Fprintf(w, "\nTargets (c=%d):\n", targetConcurrency)
	printTargets(w, ar.Targets)
}

func ratioCell(r [3]float64) string {
	if r[0] == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", r[0], r[1], r[2])
}

func printXDS(w io.Writer, xr *xdsReport, f flags) {
	fmt.Fprintf(w, "\n## xDS (gatehouse xds, %d services / %d node ids, %d streams, client and server share the CPUs)\n\n", xr.Mesh.Services, len(xr.Mesh.Nodes()), f.streams)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tconnect s\tconfig s (first)\tconfig server CPU ms\tendpoints s (streams)\trotation s\theap KB/stream\tRSS KB/stream\tgoroutines idle→conn→after\tNACKs\t")
	for _, r := range xr.Runs {
		conv := map[string]xdsload.Change{}
		for _, c := range r.Changes {
			conv[c.Kind] = c
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.3f (%.3f)\t%.0f\t%.3f (%d)\t%.3f\t%.1f\t%.1f\t%d→%d→%d\t%d\t\n", r.Mode, r.Connect.Seconds(),
			conv["config"].Converge.Seconds(), conv["config"].First.Seconds(), float64(conv["config"].ServerCPU)/float64(time.Millisecond),
			conv["endpoints"].Converge.Seconds(), conv["endpoints"].Streams,
			conv["rotation"].Converge.Seconds(), r.HeapPerStream/1024, r.RSSPerStream/1024,
			r.GoroutinesIdle, r.GoroutinesConn, r.GoroutinesEnd, r.NACKs)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nTargets:")
	printTargets(w, xr.Targets)
}
