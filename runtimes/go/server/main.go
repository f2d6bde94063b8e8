// Kubeless Go runtime server (kubeless-local): a stdlib net/http server compiled together with the
// user's function, as the Kubeless compile init container does (runtimes stable/golang). The
// generated function.go binds userFunction to the function named by FUNC_HANDLER.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kubeless/kubeless/pkg/functions"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	// How long a timed-out call may go on (e.g. cleaning up after ctx.Done()) before the server
	// restarts itself to stop it: short, a runaway loop burns a whole core meanwhile.
	runawayGrace = 200 * time.Millisecond
	listenFDEnv  = "KUBELESS_GO_LISTEN_FD"
	metricsEnv   = "KUBELESS_GO_METRICS"
)

var (
	funcTimeout time.Duration
	funcContext functions.Context
	accessLog   = log.New(os.Stdout, "", 0)
	errLog      = log.New(os.Stderr, "", 0)
	metrics     = newFuncMetrics()
	server      *http.Server
	listener    net.Listener
	restarting  atomic.Bool
)

type result struct {
	out string
	err error
}

// guardedWriter is the http.ResponseWriter handed to the function (Extensions.Response). Once the
// server has answered (timeout) or the call is over, further writes are dropped, so a goroutine
// that outlives its call cannot touch a finished response.
type guardedWriter struct {
	mu     sync.Mutex
	w      http.ResponseWriter
	header http.Header
	status int // 0 until the status line is written
	closed bool
}

func (g *guardedWriter) Header() http.Header { return g.header }

func (g *guardedWriter) WriteHeader(code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writeHeaderLocked(code)
}

func (g *guardedWriter) writeHeaderLocked(code int) {
	if g.closed || g.status != 0 {
		return
	}
	h := g.w.Header()
	for k, v := range g.header {
		h[k] = v
	}
	g.status = code
	g.w.WriteHeader(code)
}

func (g *guardedWriter) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, http.ErrHandlerTimeout
	}
	g.writeHeaderLocked(http.StatusOK)
	return g.w.Write(b)
}

func (g *guardedWriter) Flush() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.writeHeaderLocked(http.StatusOK)
	if f, ok := g.w.(http.Flusher); ok {
		f.Flush()
	}
}

// close stops all further writes and tells whether the function had already started the response.
func (g *guardedWriter) close() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	return g.status != 0
}

// statusRecorder remembers the status for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func withAccessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		accessLog.Printf("%s \"%s %s %s\" %d %s", r.RemoteAddr, r.Method, r.RequestURI, r.Proto, rec.status, r.UserAgent())
	})
}

func health(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	w.Write([]byte("OK"))
}

func serveFunction(w http.ResponseWriter, r *http.Request) {
	// CORS like the legacy Go/Node runtimes: any origin; a preflight echoes what was asked for.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		if m := r.Header.Get("Access-Control-Request-Method"); m != "" {
			w.Header().Set("Access-Control-Allow-Methods", m)
		}
		if h := r.Header.Get("Access-Control-Request-Headers"); h != "" {
			w.Header().Set("Access-Control-Allow-Headers", h)
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	start := time.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "Error reading the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body)) // the function may read it again
	ctx, cancel := context.WithTimeout(r.Context(), funcTimeout)
	defer cancel()
	deadline := time.NewTimer(funcTimeout)
	defer deadline.Stop()
	gw := &guardedWriter{w: w, header: make(http.Header)}
	event := functions.Event{
		Data:           string(body),
		EventID:        r.Header.Get("event-id"),
		EventType:      r.Header.Get("event-type"),
		EventTime:      r.Header.Get("event-time"),
		EventNamespace: r.Header.Get("event-namespace"),
		Extensions:     functions.Extension{Request: r, Response: gw, Context: ctx},
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				stack := strings.ReplaceAll(string(debug.Stack()), functionModule+"@v0.0.0/", "")
				errLog.Printf("panic in function %s: %v\n%s", funcContext.FunctionName, p, stack)
				done <- result{err: fmt.Errorf("panic: %v", p)}
			}
		}()
		out, err := userFunction(event, funcContext)
		done <- result{out, err}
	}()

	select {
	case res := <-done:
		gw.mu.Lock()
		if res.err != nil {
			errLog.Printf("function %s failed: %v", funcContext.FunctionName, res.err)
			if gw.status == 0 {
				gw.writeHeaderLocked(http.StatusInternalServerError)
				gw.w.Write([]byte("Error: " + res.err.Error()))
			}
		} else {
			// If the function already wrote the status through Extensions.Response, the status is
			// not written again; a returned string is appended to the body, as in Kubeless.
			gw.writeHeaderLocked(http.StatusOK)
			if res.out != "" {
				gw.w.Write([]byte(res.out))
			}
		}
		gw.closed = true
		gw.mu.Unlock()
		metrics.observe(r.Method, time.Since(start), res.err != nil)
	case <-deadline.C:
		// Only the timeout ends the wait: a client that went away cancels Extensions.Context but
		// the call may finish its work.
		if !gw.close() {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusRequestTimeout)
			w.Write([]byte("Timeout exceeded"))
		}
		errLog.Printf("function %s: timeout after %s", funcContext.FunctionName, funcTimeout)
		metrics.observe(r.Method, time.Since(start), true)
		go watchRunaway(done, r.Method+" "+r.RequestURI)
	}
}

// watchRunaway: Go cannot kill a goroutine. A call that ignores its context and keeps running after
// the 408 would burn CPU (and hold memory) forever, so the server restarts itself in place.
func watchRunaway(done <-chan result, call string) {
	select {
	case <-done:
		return // the function honoured Extensions.Context
	case <-time.After(runawayGrace):
	}
	errLog.Printf("WARNING: %s: the function is still running %s after its %s timeout because it "+
		"ignores event.Extensions.Context (check ctx.Done() in long loops and pass the context to "+
		"blocking calls). Go cannot stop a goroutine, so the server restarts itself in place to stop it: "+
		"requests in flight finish first, new ones wait, metrics are kept.", call, runawayGrace, funcTimeout)
	restartInPlace()
}

// restartInPlace re-executes this binary, handing over the listening socket (and the metrics), so
// no connection is refused and every goroutine of the old image is gone.
func restartInPlace() {
	if !restarting.CompareAndSwap(false, true) {
		return
	}
	tl, ok := listener.(*net.TCPListener)
	if !ok {
		errLog.Printf("cannot restart in place; exiting")
		os.Exit(1)
	}
	file, err := tl.File() // a duplicate: keeps the socket listening while the old image drains
	if err != nil {
		errLog.Printf("cannot restart in place (%v); exiting", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), funcTimeout+5*time.Second)
	server.Shutdown(ctx) // stop accepting; wait for the calls in flight (each bounded by the timeout)
	cancel()
	fd := file.Fd()
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETFD, 0); e != 0 {
		errLog.Printf("cannot restart in place (fcntl: %v); exiting", e)
		os.Exit(1)
	}
	state, _ := json.Marshal(metrics.snapshot())
	env := append(os.Environ(), listenFDEnv+"="+strconv.Itoa(int(fd)), metricsEnv+"="+string(state))
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, env)
	}
	errLog.Printf("cannot restart in place (%v); exiting", err)
	os.Exit(1)
}

func controlLine(event map[string]any) {
	if os.Getenv("KUBELESS_LOCAL_CONTROL") != "1" {
		return
	}
	b, _ := json.Marshal(event)
	fmt.Fprintf(os.Stdout, "@kubeless-local %s\n", b)
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func main() {
	timeout := getenv("FUNC_TIMEOUT", "180")
	seconds, err := strconv.ParseFloat(timeout, 64)
	if err != nil || seconds <= 0 {
		errLog.Printf("invalid FUNC_TIMEOUT %q, using 180", timeout)
		seconds = 180
	}
	funcTimeout = time.Duration(seconds * float64(time.Second))
	funcContext = functions.Context{
		FunctionName: os.Getenv("FUNC_HANDLER"),
		Timeout:      timeout,
		Runtime:      os.Getenv("FUNC_RUNTIME"),
		MemoryLimit:  os.Getenv("FUNC_MEMORY_LIMIT"),
	}
	prometheus.MustRegister(metrics)

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", health)
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/", serveFunction)
	server = &http.Server{Handler: withAccessLog(mux)}

	restarted := os.Getenv(listenFDEnv) != ""
	if restarted {
		fd, _ := strconv.Atoi(os.Getenv(listenFDEnv))
		metrics.restore(os.Getenv(metricsEnv))
		os.Unsetenv(listenFDEnv)
		os.Unsetenv(metricsEnv)
		f := os.NewFile(uintptr(fd), "listener")
		listener, err = net.FileListener(f)
		f.Close()
	} else {
		addr := net.JoinHostPort(getenv("KUBELESS_LOCAL_BIND", "0.0.0.0"), getenv("FUNC_PORT", "8080"))
		listener, err = net.Listen("tcp", addr)
	}
	if err != nil {
		errLog.Printf("cannot listen: %v", err)
		os.Exit(1)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		// Short: the engine restarts the server on every reload and kills it after 3 s.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		server.Shutdown(ctx)
		os.Exit(0)
	}()

	if restarted {
		errLog.Printf("server restarted in place; serving %s again", funcContext.FunctionName)
	} else {
		errLog.Printf("Go runtime serving %s on %s (timeout %s)", funcContext.FunctionName, listener.Addr(), funcTimeout)
		controlLine(map[string]any{"event": "ready", "generation": 0})
	}
	if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errLog.Printf("server error: %v", err)
		os.Exit(1)
	}
	select {} // Shutdown in progress: restartInPlace or the signal handler ends the process
}
