// Command fixedrate is the gateway benchmark's fixed-rate load generator (Debian has
// no wrk2): it sends POSTs at a constant rate over a bounded set of keep-alive
// connections and measures each request's latency from the moment it was due, not
// from when it was sent, so a stall counts for every request it held back (corrected
// for coordinated omission, as wrk2 does). It prints one line:
//
//	rate 2000 sent 20000 errors 0 p50_ms 0.210 p90_ms 0.301 p99_ms 0.622 p999_ms 1.870 max_ms 4.100 lag_p99_ms 0.090
//
// lag_p99_ms is the time from due to sent: the generator's own lateness, plus the wait
// for one of the -connections to come free when the target is slower than the rate
// allows. The latencies include it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "target URL")
	rate := flag.Int("rate", 2000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send (bounded to 2 minutes)")
	warmup := flag.Duration("warmup", time.Second, "sent at the same rate first, not measured")
	conns := flag.Int("connections", 32, "most requests in flight (and connections)")
	body := flag.String("body", `{"dataframe_split": {"columns": ["alcohol", "malic_acid", "ash"], "data": [[13.2, 1.78, 2.14]]}}`, "request body")
	flag.Parse()
	if *url == "" || *rate <= 0 || *duration <= 0 || *duration > 2*time.Minute || *conns <= 0 {
		fmt.Fprintln(os.Stderr, "fixedrate: need -url, a positive -rate and -connections, and -duration in (0, 2m]")
		os.Exit(2)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns, DisableCompression: true,
	}}
	interval := time.Second / time.Duration(*rate)
	warm := int(*warmup / interval)
	n := warm + int(*duration/interval)

	type result struct {
		latency, lag time.Duration
		ok           bool
	}
	results := make([]result, n)
	due := make(chan int, n) // never blocks the schedule: a backlog waits here, and counts
	var wg sync.WaitGroup
	start := time.Now().Add(10 * time.Millisecond)
	for range *conns {
		wg.Go(func() {
			payload := []byte(*body)
			for i := range due {
				at := start.Add(time.Duration(i) * interval)
				sent := time.Now()
				req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewReader(payload))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				ok := err == nil
				if ok {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = err == nil && resp.StatusCode == http.StatusOK
				}
				results[i] = result{latency: time.Since(at), lag: sent.Sub(at), ok: ok}
			}
		})
	}
	for i := 0; i < n; {
		now := time.Now()
		// Everything due by now goes at once: a late wake-up does not thin the rate.
		for ; i < n && !start.Add(time.Duration(i)*interval).After(now); i++ {
			due <- i
		}
		if i < n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		}
	}
	close(due)
	wg.Wait()

	measured := results[warm:]
	lat := make([]time.Duration, 0, len(measured))
	lag := make([]time.Duration, 0, len(measured))
	errors := 0
	for _, r := range measured {
		if !r.ok {
			errors++
		}
		lat = append(lat, r.latency)
		lag = append(lag, r.lag)
	}
	slices.Sort(lat)
	slices.Sort(lag)
	q := func(s []time.Duration, p float64) float64 {
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	fmt.Printf("rate %d sent %d errors %d p50_ms %.3f p90_ms %.3f p99_ms %.3f p999_ms %.3f max_ms %.3f lag_p99_ms %.3f\n",
		*rate, len(measured), errors, q(lat, .5), q(lat, .9), q(lat, .99), q(lat, .999), q(lat, 1), q(lag, .99))
	if errors > 0 {
		os.Exit(1)
	}
}
