package analysis_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

func rateMetric(change func(*plan.Metric)) plan.Metric {
	m := plan.Metric{Name: "error-rate", Judge: plan.JudgeRate, Query: "errors", TotalQuery: "requests",
		ConsecutiveErrorLimit: intp(4), NoData: plan.NoDataHold, MaxHolds: intp(3), MinSamples: intp(100)}
	if change != nil {
		change(&m)
	}
	return m
}

func rateReading(ce, ct, be, bt float64) analysis.Reading {
	return analysis.Reading{
		Candidate: analysis.Counts{analysis.KeyEvents: ce, analysis.KeyTotal: ct},
		Champion:  analysis.Counts{analysis.KeyEvents: be, analysis.KeyTotal: bt},
	}
}

func TestJudgeRate(t *testing.T) {
	m := rateMetric(nil)
	// The champion has served for a while before the stage; the candidate is new.
	st := analysis.Start(analysis.Reading{Candidate: analysis.Counts{}, Champion: analysis.Counts{analysis.KeyEvents: 500, analysis.KeyTotal: 50000}})

	v, msg, ev, st := analysis.JudgeCounts(m, st, rateReading(1, 40, 502, 50160))
	assert.Equal(t, analysis.Hold, v, msg)
	assert.Contains(t, msg, "40 of the 100 samples needed to pass")
	assert.Equal(t, 40.0, ev.CandidateN)
	assert.Equal(t, 160.0, ev.ChampionN, "counted from the stage's start, not the champion's lifetime")
	assert.Equal(t, 2.0, ev.ChampionEvents)

	v, msg, ev, st = analysis.JudgeCounts(m, st, rateReading(2, 140, 505, 50460))
	assert.Equal(t, analysis.Pass, v, msg)
	assert.InDelta(t, (2.0/140)/(5.0/460), *ev.Value, 1e-12)
	require.NotNil(t, ev.EValue)
	assert.Less(t, *ev.EValue, 20.0)
	assert.Equal(t, 20.0, ev.Threshold)
	assert.Equal(t, 2, st.Batches)

	// A broken candidate: half its requests fail.
	for i := range 5 {
		v, msg, ev, st = analysis.JudgeCounts(m, st, rateReading(2+float64(i+1)*50, 140+float64(i+1)*100, 505, 50460+float64(i+1)*100))
		if v == analysis.Fail {
			break
		}
	}
	assert.Equal(t, analysis.Fail, v, msg)
	assert.GreaterOrEqual(t, *ev.EValue, 20.0)
	assert.LessOrEqual(t, *ev.PValue, 0.05)
	assert.Contains(t, msg, "e-value")
}

func TestJudgeRateCounterResetAndNoData(t *testing.T) {
	m := rateMetric(func(m *plan.Metric) { m.MinSamples = intp(0) })
	st := analysis.Start(rateReading(0, 0, 0, 0))
	v, msg, _, st := analysis.JudgeCounts(m, st, analysis.Reading{Candidate: analysis.Counts{}, Champion: analysis.Counts{analysis.KeyTotal: 10}})
	assert.Equal(t, analysis.Hold, v)
	assert.Contains(t, msg, "no new evidence: 0 candidate and 10 champion trials")

	v, _, _, _ = analysis.JudgeCounts(rateMetric(func(m *plan.Metric) { m.NoData = plan.NoDataFail }), st, rateReading(0, 0, 0, 20))
	assert.Equal(t, analysis.Fail, v, "policy fail")

	pass := rateMetric(func(m *plan.Metric) { m.NoData, m.AllowNoDataPass = plan.NoDataPass, true })
	v, msg, ev, _ := analysis.JudgeCounts(pass, st, rateReading(0, 0, 0, 20))
	assert.Equal(t, analysis.Pass, v)
	assert.Contains(t, msg, "WARNING")
	assert.Equal(t, analysis.NoDataPassWarning, ev.Warning)

	// The candidate's counters restart (gateway restart): that interval's growth is
	// unknown, so it is no data; counting goes on from the new values.
	_, _, _, st = analysis.JudgeCounts(m, st, rateReading(3, 300, 1, 300))
	v, msg, _, st = analysis.JudgeCounts(m, st, rateReading(1, 50, 2, 400))
	assert.Equal(t, analysis.Hold, v, msg)
	assert.Contains(t, msg, `the candidate's counter "events" went down from 3 to 1 (a restart)`)
	_, _, ev, st = analysis.JudgeCounts(m, st, rateReading(2, 150, 3, 500))
	assert.Equal(t, 400.0, ev.CandidateN, "300 before the restart, 100 after it")
	assert.Equal(t, 4.0, ev.CandidateEvents)
	assert.Equal(t, 390.0, ev.ChampionN, "290 and 100: neither the first 10 (no candidate data in that round) nor the reset interval's 100 count")

	// Judging leaves the caller's state alone: a retried activity judges the same.
	before := st.Clone()
	analysis.JudgeCounts(m, st, rateReading(50, 200, 2, 600))
	assert.Equal(t, before, st)
}

// With sum() over two replicas, one replica's restart must not recount the other's
// history as new requests (and new errors): the arm's sum goes down, the interval is
// no data, and the next interval counts only growth.
func TestJudgeRateTwoReplicaReset(t *testing.T) {
	m := rateMetric(func(m *plan.Metric) { m.MinSamples = intp(0) })
	// Replica A and B each served 10,000 candidate requests with 100 errors.
	st := analysis.Start(rateReading(200, 20000, 200, 20000))
	_, _, ev, st := analysis.JudgeCounts(m, st, rateReading(210, 21000, 210, 21000))
	require.Equal(t, 1000.0, ev.CandidateN)
	// B restarts: A = 10,600/106, B = 50/1: the sum falls from 21,000 to 10,650.
	v, msg, _, st := analysis.JudgeCounts(m, st, rateReading(107, 10650, 215, 21500))
	assert.Equal(t, analysis.Hold, v, msg)
	assert.Contains(t, msg, "a restart")
	_, _, ev, _ = analysis.JudgeCounts(m, st, rateReading(112, 11150, 220, 22000))
	assert.Equal(t, 1500.0, ev.CandidateN, "A's 10,000 requests of history are not counted again")
	assert.Equal(t, 15.0, ev.CandidateEvents)
	assert.Equal(t, 1500.0, ev.ChampionN)
}

// A value that is not a finite non-negative count is an analysis error: the state
// is handed back unchanged (and stays JSON), nothing panics.
func TestJudgeCountsNonFinite(t *testing.T) {
	for _, m := range []plan.Metric{
		rateMetric(nil),
		{Name: "latency", Judge: plan.JudgeLatency, Query: "q", NoData: plan.NoDataHold},
		{Name: "drift", Judge: plan.JudgeDrift, Query: "q", NoData: plan.NoDataHold},
	} {
		for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -5} {
			keys := []string{analysis.KeyEvents, analysis.KeyTotal}
			if m.Judge != plan.JudgeRate {
				keys = []string{"0.1", "+Inf"}
			}
			for _, key := range keys {
				st := analysis.Start(analysis.Reading{Candidate: analysis.Counts{keys[0]: 1, keys[1]: 100}, Champion: analysis.Counts{keys[0]: 1, keys[1]: 100}})
				now := analysis.Reading{Candidate: analysis.Counts{keys[0]: 2, keys[1]: 200}, Champion: analysis.Counts{keys[0]: 2, keys[1]: 200}}
				now.Candidate[key] = bad
				v, msg, _, next := analysis.JudgeCounts(m, st, now)
				assert.Equal(t, analysis.Error, v, "%s %s=%v: %s", m.Judge, key, bad, msg)
				assert.Contains(t, msg, "not a finite count")
				assert.Equal(t, st, next)
				_, err := json.Marshal(next)
				assert.NoError(t, err)
				// and on the champion's side
				now.Candidate[key], now.Champion[key] = 2, bad
				v, _, _, _ = analysis.JudgeCounts(m, st, now)
				assert.Equal(t, analysis.Error, v)
			}
		}
	}
	// Counted toward the consecutive error limit (4): the fifth error in a row fails.
	m := rateMetric(nil)
	tally := analysis.NewTally([]plan.Metric{m})
	var failure string
	for range 5 {
		v, msg, _, _ := analysis.JudgeCounts(m, analysis.Start(rateReading(0, 0, 0, 0)), rateReading(math.NaN(), 10, 0, 10))
		failure = tally.Add([]analysis.Measurement{{Metric: m.Name, Verdict: v, Message: msg}})
	}
	assert.Contains(t, failure, "5 provider errors in a row, limit 4")
}

// hist builds cumulative bucket counts from per-bucket counts on the bounds.
func hist(bounds []float64, counts []float64) analysis.Counts {
	c := analysis.Counts{}
	var cum float64
	for i, b := range bounds {
		cum += counts[i]
		c[strconv.FormatFloat(b, 'g', -1, 64)] = cum
	}
	c["+Inf"] = cum + counts[len(bounds)]
	return c
}

func addCounts(a, b analysis.Counts) analysis.Counts {
	out := analysis.Counts{}
	for k, v := range b {
		out[k] = v + a[k]
	}
	return out
}

func TestJudgeLatency(t *testing.T) {
	bounds := []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5}
	m := plan.Metric{Name: "latency", Judge: plan.JudgeLatency, Query: "q", NoData: plan.NoDataHold, MinSamples: intp(100)}
	same := []float64{100, 500, 300, 80, 15, 4, 1}
	slower := []float64{10, 100, 400, 300, 150, 35, 5}

	run := func(candidate []float64) (analysis.Verdict, string, *analysis.Evidence) {
		champ := hist(bounds, same)
		st := analysis.Start(analysis.Reading{Candidate: analysis.Counts{}, Champion: champ})
		cand := analysis.Counts{}
		var v analysis.Verdict
		var msg string
		var ev *analysis.Evidence
		for range 5 {
			cand = addCounts(cand, hist(bounds, candidate))
			champ = addCounts(champ, hist(bounds, same))
			v, msg, ev, st = analysis.JudgeCounts(m, st, analysis.Reading{Candidate: cand, Champion: champ})
			if v == analysis.Fail {
				break
			}
		}
		return v, msg, ev
	}
	v, msg, ev := run(same)
	assert.Equal(t, analysis.Pass, v, msg)
	require.Len(t, ev.Quantiles, 2)
	// histogram_quantile(0.5) on [100, 500, 300, ...] of 1000: 0.01 + 0.01*(500-100)/500
	assert.InDelta(t, 0.018, ev.Quantiles[0].Champion, 1e-12)
	assert.InDelta(t, 0.018, ev.Quantiles[0].Candidate, 1e-12)
	// 0.99: rank 990 in the 0.1..0.2 bucket (cum 980 -> 995): 0.1 + 0.1*10/15
	assert.InDelta(t, 0.1+0.1*10/15, ev.Quantiles[1].Champion, 1e-12)

	v, msg, ev = run(slower)
	assert.Equal(t, analysis.Fail, v, msg)
	assert.Greater(t, ev.Quantiles[0].Candidate, ev.Quantiles[0].Champion)
	assert.Contains(t, msg, "p50 candidate")
}

func TestJudgeDrift(t *testing.T) {
	bounds := []float64{0.2, 0.4, 0.6, 0.8}
	m := plan.Metric{Name: "score-drift", Judge: plan.JudgeDrift, Query: "q", NoData: plan.NoDataHold, MinSamples: intp(500)}
	champ := []float64{100, 320, 400, 140, 40}
	st := analysis.Start(analysis.Reading{Candidate: analysis.Counts{}, Champion: analysis.Counts{}})
	v, msg, ev, _ := analysis.JudgeCounts(m, st, analysis.Reading{Candidate: hist(bounds, []float64{120, 300, 380, 150, 50}), Champion: hist(bounds, champ)})
	assert.Equal(t, analysis.Pass, v, msg)
	// TestDriftKnownAnswers' pair: the judge adds half an observation to each bucket.
	assert.InDelta(t, 0.008884431674393138, *ev.PSI, 2e-4)
	assert.InDelta(t, 0.0016003632628113207, *ev.JS, 4e-5)

	v, msg, _, _ = analysis.JudgeCounts(m, st, analysis.Reading{Candidate: hist(bounds, []float64{10, 50, 200, 400, 340}), Champion: hist(bounds, champ)})
	assert.Equal(t, analysis.Fail, v, msg)
	assert.Contains(t, msg, "PSI 1.75")

	v, msg, _, _ = analysis.JudgeCounts(m, st, analysis.Reading{Candidate: hist(bounds, []float64{1, 5, 20, 40, 34}), Champion: hist(bounds, champ)})
	assert.Equal(t, analysis.Hold, v, "above the limit on 100 of 500 samples: not enough to judge")
	assert.Contains(t, msg, "100 of the 500 samples")
}

// TestRateJudgeAAUnderPerIntervalChecks is the guarantee that matters: a candidate
// exactly as good as the champion, checked at every interval of a canary whose weight
// rises 5, 10, 25, 50% (10 intervals each), is failed in at most alpha = 5% of the
// releases. A nominal 5% check per interval, on the same data, fails most of them.
// A candidate with twice the error rate is caught. The same holds for outcomes that
// are not rare (30% of 200 labelled predictions per interval), where the test's
// exact law of a batch's table matters most.
func TestRateJudgeAAUnderPerIntervalChecks(t *testing.T) {
	const perStep = 10
	weights := []float64{0.05, 0.10, 0.25, 0.50}
	m := rateMetric(nil)
	rnd := rand.New(rand.NewPCG(4, 2026))
	binom := func(n, p float64) float64 {
		if n == 0 {
			return 0
		}
		return distuv.Binomial{N: n, P: p, Src: rnd}.Rand()
	}
	simulate := func(runs int, requests, rate, canaryRate float64) (judgeFails, naiveFails int) {
		for range runs {
			st := analysis.Start(rateReading(0, 0, 0, 0))
			cum := rateReading(0, 0, 0, 0)
			judged, naive := false, false
			for _, w := range weights {
				for range perStep {
					nc := binom(requests, w)
					nb := requests - nc
					x, y := binom(nc, canaryRate), binom(nb, rate)
					// The naive check: this interval's canary error rate against a
					// one-sided 5% bound for the champion's rate.
					if nc > 0 && x/nc > rate+1.645*math.Sqrt(rate*(1-rate)/nc) {
						naive = true
					}
					cum = rateReading(cum.Candidate[analysis.KeyEvents]+x, cum.Candidate[analysis.KeyTotal]+nc,
						cum.Champion[analysis.KeyEvents]+y, cum.Champion[analysis.KeyTotal]+nb)
					var v analysis.Verdict
					v, _, _, st = analysis.JudgeCounts(m, st, cum)
					if v == analysis.Fail {
						judged = true
					}
				}
			}
			if judged {
				judgeFails++
			}
			if naive {
				naiveFails++
			}
		}
		return judgeFails, naiveFails
	}

	for _, c := range []struct {
		what           string
		runs           int
		requests, rate float64
	}{
		{"error rate 2%, 2,000 requests per interval", 2000, 2000, 0.02},
		{"30% incorrect, 200 labelled per interval", 1000, 200, 0.30},
	} {
		fails, naive := simulate(c.runs, c.requests, c.rate, c.rate)
		rate := float64(fails) / float64(c.runs)
		t.Logf("A/A %s, %d releases of 40 looks: sequential rate judge failed %d (%.2f%%), naive per-interval check %d (%.1f%%)",
			c.what, c.runs, fails, 100*rate, naive, 100*float64(naive)/float64(c.runs))
		assert.LessOrEqual(t, rate, 0.05, "false rollbacks at or below alpha however often it looks: %s", c.what)
		assert.Greater(t, float64(naive)/float64(c.runs), 0.5, "the naive check cries wolf: %s", c.what)
	}

	caught, _ := simulate(2000, 2000, 0.02, 0.04)
	t.Logf("error rate x2: caught %d of 2000", caught)
	assert.Greater(t, float64(caught)/2000, 0.95)
	// 30% to 45% incorrect on 200 labelled per interval: 1,800 canary predictions
	// in the 40 intervals.
	caught, _ = simulate(1000, 200, 0.30, 0.45)
	t.Logf("30%% to 45%% incorrect: caught %d of 1000", caught)
	assert.Greater(t, float64(caught)/1000, 0.95)
}

// Evidence and state travel as JSON through workflow history: a broken candidate
// against a champion without errors (an undefined ratio, a huge e-value) must encode.
func TestJudgeRateEvidenceEncodes(t *testing.T) {
	m := rateMetric(nil)
	st := analysis.Start(rateReading(0, 0, 0, 0))
	var v analysis.Verdict
	var ev *analysis.Evidence
	for i := 1; i <= 20; i++ {
		v, _, ev, st = analysis.JudgeCounts(m, st, rateReading(float64(1000*i), float64(1000*i), 0, float64(1000*i)))
	}
	assert.Equal(t, analysis.Fail, v)
	assert.Nil(t, ev.Value, "ratio over a zero rate is undefined")
	_, err := json.Marshal(analysis.Measurement{Evidence: ev, State: &st})
	require.NoError(t, err)
}

// BenchmarkJudgeRateBillion is one rate judge call on a billion requests per arm
// since the last round (10 million errors each): bounded time and memory whatever the
// counts (bench/README.md: under 10 ms and 10 MB).
func BenchmarkJudgeRateBillion(b *testing.B) {
	m := rateMetric(func(m *plan.Metric) { m.Tolerance = 0.1 })
	st := analysis.Start(rateReading(1e5, 1e7, 1e5, 1e7))
	now := rateReading(1e7+1e5, 1e9+1e7, 1.01e7+1e5, 1e9+1e7)
	b.ReportAllocs()
	for b.Loop() {
		v, _, _, _ := analysis.JudgeCounts(m, st, now)
		if v == analysis.Error {
			b.Fatal(v)
		}
	}
}

// BenchmarkJudgeLatencyBillion is one latency judge call on a billion observations
// per arm in the gateway's native histogram (107 buckets from 1 ms to 10 s).
func BenchmarkJudgeLatencyBillion(b *testing.B) {
	var bounds, counts []float64
	for k := -80; k <= 26; k++ { // 2^(k/8): 1 ms .. 9.5 s
		bounds = append(bounds, math.Pow(2, float64(k)/8))
		counts = append(counts, 1e9/108)
	}
	counts = append(counts, 1e9/108)
	m := plan.Metric{Name: "latency", Judge: plan.JudgeLatency, Query: "q", NoData: plan.NoDataHold, Tolerance: 0.1}
	st := analysis.Start(analysis.Reading{Candidate: hist(bounds, counts), Champion: hist(bounds, counts)})
	now := analysis.Reading{Candidate: addCounts(hist(bounds, counts), hist(bounds, counts)), Champion: addCounts(hist(bounds, counts), hist(bounds, counts))}
	b.ReportAllocs()
	for b.Loop() {
		v, _, _, _ := analysis.JudgeCounts(m, st, now)
		if v == analysis.Error {
			b.Fatal(v)
		}
	}
}

// A native histogram lists only buckets that hold observations. After a restart a
// bucket may be gone and come back lower: counting starts again from the reading
// after the restart, so its return is growth, not a second reset.
func TestJudgeLatencySparseBucketsAfterRestart(t *testing.T) {
	m := plan.Metric{Name: "latency", Judge: plan.JudgeLatency, Query: "q", NoData: plan.NoDataHold, MinSamples: intp(0), Tolerance: 0.1}
	champ := analysis.Counts{"0.05": 900, "0.1": 990, "0.2": 1000, "+Inf": 1000}
	st := analysis.Start(analysis.Reading{Candidate: analysis.Counts{"0.05": 90, "0.2": 100, "+Inf": 100}, Champion: champ})
	// Restart: the candidate's 0.2 bucket is empty, so not listed.
	v, msg, _, st := analysis.JudgeCounts(m, st, analysis.Reading{Candidate: analysis.Counts{"0.05": 5, "+Inf": 5}, Champion: champ})
	require.Equal(t, analysis.Hold, v, msg)
	assert.Contains(t, msg, "a restart")
	champ = analysis.Counts{"0.05": 990, "0.1": 1089, "0.2": 1100, "+Inf": 1100}
	v, msg, ev, _ := analysis.JudgeCounts(m, st, analysis.Reading{Candidate: analysis.Counts{"0.05": 14, "0.2": 15, "+Inf": 15}, Champion: champ})
	assert.Equal(t, analysis.Pass, v, msg)
	assert.Equal(t, 10.0, ev.CandidateN)
}

// Stale evidence never passes: while the data plane is down the counters stop, and
// every round on them is no data (hold), however strong the evidence before.
func TestJudgeStaleCountsHold(t *testing.T) {
	m := rateMetric(nil)
	st := analysis.Start(rateReading(0, 0, 0, 0))
	v, msg, _, st := analysis.JudgeCounts(m, st, rateReading(156, 1249, 1500, 12000))
	require.Equal(t, analysis.Pass, v, msg)
	for range 3 {
		v, msg, _, st = analysis.JudgeCounts(m, st, rateReading(156, 1249, 1500, 12000))
		assert.Equal(t, analysis.Hold, v)
		assert.Contains(t, msg, "no new evidence: 0 candidate and 0 champion trials since the last round (policy: hold)")
	}
	// The champion alone moving is no evidence either.
	v, _, _, _ = analysis.JudgeCounts(m, st, rateReading(156, 1249, 1510, 12100))
	assert.Equal(t, analysis.Hold, v)
}
