// Go fixture server: go run main.go PORT
// /api/orders/{n} panics (index out of range); a recover middleware writes the panic and
// debug.Stack() into the 500 response, as many hand-rolled Go services do in development.
// net/http/pprof is mounted, so /debug/pprof/goroutine?debug=2 answers a goroutine dump.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

var orders = []string{"A-100", "A-101"}

func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprintf(w, "panic: %v\n\n%s", p, debug.Stack())
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func order(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/api/orders/"))
	ref := orders[n]
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"index": n, "ref": ref, "state": "open"})
}

func health(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"status": "ok", "uptime_s": 12})
}

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/orders/", order)
	mux.HandleFunc("/healthz", health)
	mux.Handle("/debug/pprof/", http.DefaultServeMux)
	http.ListenAndServe("127.0.0.1:"+os.Args[1], recoverer(mux))
}
