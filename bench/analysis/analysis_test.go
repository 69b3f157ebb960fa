package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"gonum.org/v1/gonum/stat/distuv"
)

var methods = []string{Naive, MannWhitney, ZTest, Sequential}

// simulate runs n releases of a scenario, each with its own seeded generator.
func simulate(seed uint64, n int, sc Scenario, sched Schedule) []Outcome {
	out := make([]Outcome, n)
	for i := range out {
		out[i] = Run(rand.New(rand.NewPCG(seed, uint64(i))), sc, sched)
	}
	return out
}

func failures(outs []Outcome, method string) (k int, sizes []float64) {
	for _, o := range outs {
		if o[method] > 0 {
			k++
			sizes = append(sizes, o[method])
		} else {
			sizes = append(sizes, math.Inf(1))
		}
	}
	return k, sizes
}

// TestSimulationAA is a bounded version of the benchmark, in the test suite: a
// candidate as good as the champion, checked at every one of 60 intervals, is rolled
// back by the sequential judge in at most 5% of releases, by the naive methods in
// far more; a doubled error rate is caught.
func TestSimulationAA(t *testing.T) {
	sched := Rising(5, 60, 2000)
	aa := simulate(1, 400, Rate{Champion: 0.01, Candidate: 0.01}, sched)
	seq, _ := failures(aa, Sequential)
	naive, _ := failures(aa, Naive)
	mw, _ := failures(aa, MannWhitney)
	t.Logf("A/A false rollbacks of 400: sequential %d, naive %d, Mann-Whitney %d", seq, naive, mw)
	assert.LessOrEqual(t, float64(seq)/400, 0.05)
	assert.Greater(t, naive, 4*seq)
	assert.Greater(t, mw, seq)

	bad := simulate(2, 100, Rate{Champion: 0.01, Candidate: 0.02}, sched)
	caught, _ := failures(bad, Sequential)
	assert.GreaterOrEqual(t, caught, 95, "a doubled error rate is caught")
}

// BenchmarkAnalysis prints the figures of bench/README.md. It is a simulation, not a
// timing: run it once with -benchtime 1x.
func BenchmarkAnalysis(b *testing.B) {
	for b.Loop() {
		report(os.Stdout)
	}
}

type scenario struct {
	name   string
	sc     Scenario
	sched  Schedule
	runs   int
	pc, pb float64 // for the fixed-horizon size; 0 for A/A
}

func report(w *os.File) {
	start := time.Now()
	errors := Rising(10, 100, 4000)
	labels := Rising(10, 100, 1000)
	lat := Latency{Median: 0.05, Sigma: 0.5, Slowdown: 1, Bounds: bounds10()}
	slow := lat
	slow.Slowdown = 1.2
	z99 := distuv.UnitNormal.Quantile(0.99)
	p99Exceed := distuv.UnitNormal.Survival(z99 - math.Log(1.2)/lat.Sigma)
	scenarios := []scenario{
		{"A/A error rate 1%", Rate{Champion: 0.01, Candidate: 0.01}, errors, 2000, 0, 0},
		{"A/A latency (log-normal, median 50 ms)", lat, errors, 2000, 0, 0},
		{"A/A accuracy 90% (on labelled feedback)", Rate{Champion: 0.10, Candidate: 0.10}, labels, 2000, 0, 0},
		{"error rate x1.25", Rate{Champion: 0.01, Candidate: 0.0125}, errors, 500, 0.0125, 0.01},
		{"error rate x1.5", Rate{Champion: 0.01, Candidate: 0.015}, errors, 500, 0.015, 0.01},
		{"error rate x2", Rate{Champion: 0.01, Candidate: 0.02}, errors, 500, 0.02, 0.01},
		{"p99 latency +20%", slow, errors, 500, p99Exceed, 0.01},
		{"accuracy down 2 points (90% to 88%)", Rate{Champion: 0.10, Candidate: 0.12}, labels, 500, 0.12, 0.10},
	}
	fmt.Fprintf(w, "\n| scenario | runs | method | rollbacks (95%% CI) | median / p90 canary requests to detect | fixed-horizon size |\n|---|---|---|---|---|---|\n")
	for i, s := range scenarios {
		outs := simulate(uint64(100+i), s.runs, s.sc, s.sched)
		fixed := "-"
		if s.pc > 0 {
			fixed = fmt.Sprintf("%.0f", FixedHorizon(s.sched, s.pc, s.pb))
		}
		for _, m := range methods {
			if _, ok := s.sc.(Latency); ok && m == ZTest {
				continue
			}
			k, sizes := failures(outs, m)
			lo, hi := ClopperPearson(k, s.runs)
			detect := "-"
			if s.pc > 0 {
				detect = fmt.Sprintf("%s / %s", size(Percentile(sizes, 0.5)), size(Percentile(sizes, 0.9)))
			}
			fmt.Fprintf(w, "| %s | %d | %s | %.1f%% (%.1f-%.1f%%) | %s | %s |\n", s.name, s.runs, m, 100*float64(k)/float64(s.runs), 100*lo, 100*hi, detect, fixed)
		}
	}
	fmt.Fprintf(w, "\n%d intervals per release; simulated in %s\n", len(errors.Weights), time.Since(start).Round(time.Second))
}

func size(x float64) string {
	if math.IsInf(x, 1) {
		return "not within the horizon"
	}
	return strings.TrimSpace(fmt.Sprintf("%.0f", x))
}

// bounds10 are bucket bounds 10% apart from 1 ms to 10 s.
func bounds10() []float64 {
	var b []float64
	for x := 0.001; x < 10; x *= 1.1 {
		b = append(b, x)
	}
	return b
}
