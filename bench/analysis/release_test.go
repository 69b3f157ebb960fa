package analysis

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/plan"
)

// demoRelease is the demo plan's release (examples/plans/demo.yaml): its three
// statistical metrics with their budget shares, shadow 3 intervals, canary 10, 25,
// 50% for 3 intervals each, a 5% holdout in the watch; 1,000 requests per interval.
func demoRelease(t testing.TB, watch int) Release {
	p, err := plan.Load("../../examples/plans/demo.yaml")
	require.NoError(t, err)
	var ms []plan.Metric
	for _, m := range p.Analysis.Metrics {
		if m.Sequential() {
			ms = append(ms, m)
		}
	}
	require.Len(t, ms, 3)
	return Release{Metrics: ms, Requests: 1000, Shadow: 3, Steps: []int{10, 25, 50}, Bake: 3, Holdout: p.HoldoutOrDefault(), Watch: watch}
}

func constant(rate float64) func(string, int) (float64, float64) {
	return func(string, int) (float64, float64) { return rate, rate }
}

func one(string, int) float64 { return 1 }

// worlds are the A/A cases: the candidate is the champion; after promotion both may
// shift together.
func worlds() []struct {
	name string
	w    World
} {
	return []struct {
		name string
		w    World
	}{
		{"A/A, error rate 1%", World{ErrorRate: constant(0.01), LatencyScale: one, RestartAt: -1}},
		{"A/A, both x1.2 (errors and latency) after promotion", World{
			ErrorRate: func(stage string, _ int) (float64, float64) {
				if stage == "watch" {
					return 0.012, 0.012
				}
				return 0.01, 0.01
			},
			LatencyScale: func(stage string, _ int) float64 {
				if stage == "watch" {
					return 1.2
				}
				return 1
			}, RestartAt: -1}},
		{"A/A, both drift 0.5% to 1.5% over the watch's first 20 intervals", World{
			ErrorRate: func(stage string, t int) (float64, float64) {
				r := 0.005
				if stage == "watch" {
					r += 0.01 * min(float64(t), 20) / 20
				}
				return r, r
			}, LatencyScale: one, RestartAt: -1}},
		{"A/A, a gateway replica restarts in the canary", World{ErrorRate: constant(0.01), LatencyScale: one, RestartAt: 4}},
	}
}

// simulateReleases runs n seeded releases on two goroutines.
func simulateReleases(r Release, w World, seed uint64, n int) []ReleaseOutcome {
	out := make([]ReleaseOutcome, n)
	var wg sync.WaitGroup
	workers := min(2, runtime.GOMAXPROCS(0))
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < n; i += workers {
				out[i] = r.Run(rand.New(rand.NewPCG(seed, uint64(i))), w)
			}
		}()
	}
	wg.Wait()
	return out
}

// rolledBack counts releases rolled back before the end of a watch of w intervals.
func rolledBack(outs []ReleaseOutcome, w int) int {
	k := 0
	for _, o := range outs {
		if o.Stage != "" && (o.Stage != "watch" || o.Interval <= w) {
			k++
		}
	}
	return k
}

// TestWholeReleaseAA is a bounded version of the release benchmark: 200 A/A
// releases with a common x1.2 shift after promotion and a 60-interval watch.
func TestWholeReleaseAA(t *testing.T) {
	r := demoRelease(t, 60)
	w := worlds()[1].w
	outs := simulateReleases(r, w, 7, 200)
	k := rolledBack(outs, 60)
	t.Logf("%d of 200 rolled back", k)
	require.LessOrEqual(t, k, 10)
}

// BenchmarkRelease prints the whole-release figures of bench/README.md (issue 10).
// A simulation, not a timing: run it once with -benchtime 1x.
func BenchmarkRelease(b *testing.B) {
	for b.Loop() {
		reportRelease(b, os.Stdout, 2000, 500)
	}
}

var watches = []int{20, 60, 200, 1000}

func reportRelease(t testing.TB, w io.Writer, runs, regressions int) {
	start := time.Now()
	r := demoRelease(t, 1000)
	fmt.Fprintf(w, "\n| A/A case (%d releases each) | watch 20 | watch 60 | watch 200 | watch 1,000 |\n|---|---|---|---|---|\n", runs)
	for i, c := range worlds() {
		outs := simulateReleases(r, c.w, uint64(1000+i), runs)
		fmt.Fprintf(w, "| %s |", c.name)
		for _, wl := range watches {
			k := rolledBack(outs, wl)
			lo, hi := ClopperPearson(k, runs)
			fmt.Fprintf(w, " %.2f%% (%.2f-%.2f) |", 100*float64(k)/float64(runs), 100*lo, 100*hi)
		}
		by := map[string]int{}
		for _, o := range outs {
			if o.Stage != "" {
				by[o.Stage+" "+o.Metric]++
			}
		}
		fmt.Fprintf(w, " <!-- %v -->\n", by)
	}
	// +300 ms on 3% of the candidate's requests, judged on the native histogram
	// with tolerance 0.1: caught before promotion, with and without a shadow soak.
	for _, shadow := range []int{3, 0} {
		rr := demoRelease(t, 0)
		rr.Shadow = shadow
		slow := World{ErrorRate: constant(0.01), LatencyScale: one, Slow: 0.03, SlowBy: 0.3, RestartAt: -1}
		outs := simulateReleases(rr, slow, 77, regressions)
		caught, canary := 0, 0
		for _, o := range outs {
			if o.Stage != "" && o.Metric == "latency" {
				caught++
				if o.Stage == "canary" {
					canary++
				}
			}
		}
		lo, hi := ClopperPearson(caught, regressions)
		fmt.Fprintf(w, "\n+300 ms on 3%% of requests, shadow %d intervals: caught by the latency judge before promotion in %d of %d releases (%.1f%%, 95%% CI %.1f-%.1f), %d of them in the canary\n",
			shadow, caught, regressions, 100*float64(caught)/float64(regressions), 100*lo, 100*hi, canary)
	}
	// Error rate x1.5 and x2: the rate judge's median requests to detect, looking
	// every tenth of an interval, at alpha 5% and at its share of the demo plan's
	// budget, against the fixed-horizon size (80% power, one-sided 5%).
	sched := Rising(10, 100, 4000)
	fmt.Fprintf(w, "\n| regression (%d releases) | alpha | fixed-horizon size (one-sided 5%%) | median / p90 requests to detect | median / fixed | fixed horizon at the same alpha | median / that |\n|---|---|---|---|---|---|---|\n", regressions)
	for _, pc := range []float64{0.015, 0.02} {
		fixed := FixedHorizon(sched, pc, 0.01)
		for _, alpha := range []float64{0.05, r.Metrics[0].Alpha} {
			m := Rate{Champion: 0.01, Candidate: pc}.Metric()
			m.Alpha = alpha
			sizes := make([]float64, regressions)
			for i := range sizes {
				if n := Detect(rand.New(rand.NewPCG(55, uint64(i))), m, sched, 0.01, pc); n > 0 {
					sizes[i] = n
				} else {
					sizes[i] = math.Inf(1)
				}
			}
			med := Percentile(sizes, 0.5)
			same := FixedHorizonAt(sched, pc, 0.01, alpha)
			fmt.Fprintf(w, "| error rate x%.1f | %.4g | %.0f | %s / %s | %.2f | %.0f | %.2f |\n", pc/0.01, alpha, fixed, size(med), size(Percentile(sizes, 0.9)), med/fixed, same, med/same)
		}
	}
	fmt.Fprintf(w, "\nsimulated in %s\n", time.Since(start).Round(time.Second))
}
