// bench-httpd: the small HTTP server that wrk measures against in bench/run.py.
// Answers every request with a 13-byte body; honours "Connection: close" (used for the
// new-connections-per-second measurement). Standard library only.
package main

import (
	"flag"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("listen", ":8080", "address to listen on")
	flag.Parse()
	body := []byte("hello, bench\n")
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
