// Command upstream is the model server of the gateway benchmark: it answers every
// request with a fixed MLflow scoring answer, after an optional delay, so that the
// benchmark measures the proxies and not a model.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19001", "address to serve on")
	delay := flag.Duration("delay", 0, "wait this long before answering (a slow model)")
	flag.Parse()
	answer := []byte(`{"predictions": [[0.1, 0.7, 0.2]]}` + "\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if *delay > 0 {
			time.Sleep(*delay)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	log.Fatal((&http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}).ListenAndServe())
}
