// Command pprof serves the gateway as the gateway binary does (metrics, GOGC=400) with
// net/http/pprof on a second address, to profile it under bench/gateway/run.sh's load:
//
//	go run ./bench/gateway/pprof -listen 127.0.0.1:19081 -pprof 127.0.0.1:6060 &
//	go tool pprof -seconds 10 http://127.0.0.1:6060/debug/pprof/profile
package main

import (
	"flag"
	"log"
	"net/http"
	_ "net/http/pprof"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mlrelease/mlrelease/internal/gateway"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19081", "gateway address")
	pprofAddr := flag.String("pprof", "127.0.0.1:6060", "pprof address")
	token := flag.String("token", "bench", "admin token")
	flag.Parse()
	debug.SetGCPercent(400)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gw, err := gateway.New(gateway.Options{AdminToken: *token, Registerer: reg, Gatherer: reg})
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(http.ListenAndServe(*pprofAddr, nil)) }()
	srv := &http.Server{Addr: *listen, Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: time.Minute, WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute}
	log.Fatal(srv.ListenAndServe())
}
