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
	"os/exec"
	"os/signal"
	"path/filepath"
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
	runawayGrace  = 200 * time.Millisecond
	listenFDEnv   = "KUBELESS_GO_LISTEN_FD"
	metricsEnv    = "KUBELESS_GO_METRICS"
	generationEnv = "KUBELESS_GO_GENERATION"
	restartEnv    = "KUBELESS_GO_RESTART"
	// Exit code when the port cannot be bound: not a load failure, the engine may retry another port.
	exitCannotListen = 4
	// After a call with a request body this big, the memory goes back to the OS (see releaseMemory).
	bigBody = 8 << 20
)

var (
	funcTimeout time.Duration
	funcContext functions.Context
	accessLog   = log.New(os.Stdout, "", 0)
	errLog      = log.New(os.Stderr, "", 0)
	metrics     = newFuncMetrics()
	server      *http.Server
	listener    net.Listener
	generation  int    // code generation: 0 at start, +1 per reload (SIGHUP), kept across re-execs
	startPath   string // see startPathOf
	hups        = make(chan os.Signal, 1)
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
		if draining.Load() { // a restart waits for this connection: the client must not reuse it
			s.Header().Set("Connection", "close")
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
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
	body, err := readBody(r)
	if err != nil {
		http.Error(w, "Error reading the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) >= bigBody {
		defer releaseMemory()
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

// readBody reads the whole body into one buffer of its announced size (io.ReadAll would grow it by
// doubling, leaving several times its size as garbage).
func readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength <= 0 {
		return io.ReadAll(r.Body)
	}
	body := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return nil, err
	}
	return body, nil
}

var release struct {
	sync.Mutex
	timer *time.Timer
}

// releaseMemory returns the memory of big bodies to the OS shortly after the last such call: the Go
// runtime collects only as it allocates, so an idle server would keep the last big bodies (and
// their copies) for minutes.
func releaseMemory() {
	release.Lock()
	defer release.Unlock()
	const after = 100 * time.Millisecond // the call's buffers are unreachable by then
	if release.timer == nil {
		release.timer = time.AfterFunc(after, debug.FreeOSMemory)
	} else {
		release.timer.Reset(after)
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
	requestRestart(restartRunaway)
}

// The two reasons to re-execute the server in place, handing over the listening socket.
const (
	restartRunaway = "runaway" // the code that serves, again, to stop a goroutine Go cannot kill
	restartReload  = "reload"  // SIGHUP: the new build, which the engine put behind the start path
)

var restart struct {
	sync.Mutex
	running bool // a restart is draining the calls in flight
	reload  bool // a SIGHUP asked for new code
}

// requestRestart starts a restart in place, or folds a reload into the one already under way.
func requestRestart(reason string) {
	restart.Lock()
	if reason == restartReload {
		restart.reload = true
	}
	if restart.running {
		restart.Unlock()
		return
	}
	restart.running = true
	restart.Unlock()
	restartInPlace()
}

// restartInPlace re-executes the server, handing over the listening socket (and the metrics and the
// generation), so no connection is refused: new ones wait in the socket's backlog while the calls in
// flight finish, and every goroutine of the old image is gone. Both reasons execute the start path
// (the engine's `build` link, never the build it resolved to: the engine prunes old builds) and hand
// it on as argv[0], so every later restart goes through the link too. If a reload's new build cannot
// be executed, the old code keeps serving and `load-failed` is printed.
func restartInPlace() {
	restart.Lock()
	reload := restart.reload
	restart.Unlock()
	if reload {
		if err := syscall.Access(startPath, 1 /* X_OK */); err != nil {
			reloadFailed(fmt.Sprintf("%s: cannot execute the new build: %v", startPath, err))
			return // nothing was stopped: the old code serves on
		}
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
	drain(funcTimeout + 5*time.Second)
	killStarted() // as the container's restart ended them: a runaway call's own, and its goroutine with them
	fd := file.Fd()
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETFD, 0); e != 0 {
		errLog.Printf("cannot restart in place (fcntl: %v); exiting", e)
		os.Exit(1)
	}
	// A SIGHUP between exec and the new image's signal.Notify must not kill it (the default action):
	// ignored signals stay ignored across exec.
	signal.Ignore(syscall.SIGHUP)
	restart.Lock()
	reload = restart.reload // a SIGHUP may have come while the calls drained
	restart.Unlock()
	nextGeneration, reason := generation, restartRunaway
	if reload {
		nextGeneration, reason = generation+1, restartReload
	}
	state, _ := json.Marshal(metrics.snapshot())
	env := append(os.Environ(), listenFDEnv+"="+strconv.Itoa(int(fd)), metricsEnv+"="+string(state),
		generationEnv+"="+strconv.Itoa(nextGeneration), restartEnv+"="+reason)
	args := append([]string{startPath}, os.Args[1:]...)
	err = syscall.Exec(startPath, args, env)
	if !reload {
		// The link names nothing executable: exit, and the engine starts the server again.
		errLog.Printf("cannot restart in place (%s: %v); exiting", startPath, err)
		os.Exit(1)
	}
	// The new build cannot be executed: serve on with the old code.
	resumed, lerr := net.FileListener(file)
	file.Close()
	if lerr != nil {
		errLog.Printf("cannot serve again (%v); exiting", lerr)
		os.Exit(1)
	}
	listener = resumed
	server = newServer()
	signal.Notify(hups, syscall.SIGHUP)
	served = make(chan struct{})
	go serve()
	reloadFailed(fmt.Sprintf("%s: cannot execute the new build: %v", startPath, err))
}

// reloadFailed: the old code keeps serving; the generation still counts, as in every runtime.
func reloadFailed(message string) {
	generation++
	reportLoadFailure(message)
	restart.Lock()
	restart.running, restart.reload = false, false
	restart.Unlock()
}

// startPathOf is the absolute path this server was started by, not resolved: the engine starts
// <function>/build/server through a link that each reload points at the new build.
func startPathOf(arg0 string) string {
	if !strings.Contains(arg0, "/") {
		if found, err := exec.LookPath(arg0); err == nil {
			arg0 = found
		}
	}
	if abs, err := filepath.Abs(arg0); err == nil {
		return abs
	}
	return arg0
}

// startedProcesses: the processes this server started and theirs, while they are its (Linux /proc; none found
// elsewhere).
func startedProcesses() []int {
	var found []int
	parents := []int{os.Getpid()}
	for len(parents) > 0 {
		pid := parents[len(parents)-1]
		parents = parents[:len(parents)-1]
		lists, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, list := range lists {
			data, err := os.ReadFile(list)
			if err != nil {
				continue
			}
			for _, field := range strings.Fields(string(data)) {
				if child, err := strconv.Atoi(field); err == nil {
					found = append(found, child)
					parents = append(parents, child)
				}
			}
		}
	}
	return found
}

// killStarted SIGKILLs every process the server started (a runaway call's subprocess, a shell in a session of its
// own) before it restarts in place: each is stopped first so that none starts another meanwhile; read again until
// no new one shows (bounded). A restart keeps the pid, so they would run on as the new image's children.
func killStarted() {
	stopped := map[int]bool{}
	for pass := 0; pass < 5; pass++ {
		fresh := 0
		for _, pid := range startedProcesses() {
			if !stopped[pid] {
				stopped[pid] = true
				fresh++
				_ = syscall.Kill(pid, syscall.SIGSTOP)
			}
		}
		if fresh == 0 {
			break
		}
	}
	for pid := range stopped {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Its own children are reaped here (the new image would not know them: zombies until the server ends); the
	// others' parents were killed too, and whoever adopts them reaps them.
	for wait := 0; wait < 20 && len(stopped) > 0; wait++ {
		for pid := range stopped {
			if got, err := syscall.Wait4(pid, nil, syscall.WNOHANG, nil); got == pid || err != nil {
				delete(stopped, pid)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reportLoadFailure: under kubeless-local the engine shows the error (once); standalone it goes to stderr.
func reportLoadFailure(message string) {
	if underEngine() {
		controlLine(map[string]any{"event": "load-failed", "generation": generation, "error": message})
	} else {
		errLog.Printf("reload failed, keeping the previous code: %s", message)
	}
}

// underEngine: kubeless-local runs this server and reads its control lines.
func underEngine() bool {
	return os.Getenv("KUBELESS_LOCAL_CONTROL") == "1"
}

func controlLine(event map[string]any) {
	if !underEngine() {
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

// The server's connections and their state, so that a restart can wait for them (see drain).
type connState struct {
	state http.ConnState
	since time.Time
}

var conns struct {
	sync.Mutex
	open map[net.Conn]connState
}

var draining atomic.Bool // a restart is waiting for the connections: answers close theirs

func newServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", health)
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/", serveFunction)
	conns.open = map[net.Conn]connState{}
	draining.Store(false)
	track := func(c net.Conn, state http.ConnState) {
		conns.Lock()
		defer conns.Unlock()
		if state == http.StateClosed || state == http.StateHijacked {
			delete(conns.open, c)
		} else {
			conns.open[c] = connState{state, time.Now()}
		}
	}
	return &http.Server{Handler: withAccessLog(mux), ConnState: track}
}

var served chan struct{} // closed when the current Serve loop has returned; made by serve's caller

func serve() {
	done := served
	err := server.Serve(listener)
	close(done)
	restart.Lock()
	restarting := restart.running
	restart.Unlock()
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !restarting {
		errLog.Printf("server error: %v", err)
		os.Exit(1)
	}
}

// drain stops accepting and waits (at most `limit`) until every connection has been answered and
// closed. Not http.Server.Shutdown: that closes a connection whose request arrives after it began
// without answering it, and closes idle keep-alive connections at once, racing with a client that
// is sending on one. Here every request read gets its answer (with Connection: close), a keep-alive
// connection is closed only once idle for a while, and connections not yet accepted wait in the
// socket's backlog for the next image.
func drain(limit time.Duration) {
	const idleGrace, newGrace = 250 * time.Millisecond, 5 * time.Second
	draining.Store(true)
	listener.Close() // the socket itself stays open: the restart holds a duplicate
	<-served         // every accepted connection is tracked from here on
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		left := 0
		conns.Lock()
		for c, info := range conns.open {
			idle := time.Since(info.since)
			if (info.state == http.StateIdle && idle >= idleGrace) || (info.state == http.StateNew && idle >= newGrace) {
				c.Close()
				delete(conns.open, c)
			} else {
				left++
			}
		}
		conns.Unlock()
		if left == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
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
	startPath = startPathOf(os.Args[0]) // before the chdir: a relative start path is relative to the first folder
	// The working folder is the function's folder (the pod's /kubeless), entered through the stable
	// link on every (re-)start, so relative reads see the current code.
	if dir := os.Getenv("KUBELESS_INSTALL_VOLUME"); dir != "" {
		if err := os.Chdir(dir); err != nil {
			errLog.Printf("cannot enter %s: %v", dir, err)
		}
	}
	server = newServer()

	reason := os.Getenv(restartEnv)
	if reason != "" {
		fd, _ := strconv.Atoi(os.Getenv(listenFDEnv))
		metrics.restore(os.Getenv(metricsEnv))
		generation, _ = strconv.Atoi(os.Getenv(generationEnv))
		for _, key := range []string{listenFDEnv, metricsEnv, generationEnv, restartEnv} {
			os.Unsetenv(key)
		}
		f := os.NewFile(uintptr(fd), "listener")
		listener, err = net.FileListener(f)
		f.Close()
		if err != nil {
			errLog.Printf("cannot restart in place: %v", err)
			os.Exit(1)
		}
	} else {
		addr := net.JoinHostPort(getenv("KUBELESS_LOCAL_BIND", "0.0.0.0"), getenv("FUNC_PORT", "8080"))
		listener, err = net.Listen("tcp", addr)
		if err != nil {
			errLog.Printf("cannot listen on %s: %v", addr, err)
			os.Exit(exitCannotListen)
		}
		if port := os.Getenv(debugPortEnv); port != "" {
			runDebugLauncher(port, listener) // never returns: see debug.go
		}
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		// Short: the engine kills the server after 3 s.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		server.Shutdown(ctx)
		os.Exit(0)
	}()
	// SIGHUP: reload = re-execute the start path (see restartInPlace).
	signal.Notify(hups, syscall.SIGHUP)
	go func() {
		for range hups {
			requestRestart(restartReload) // returns only if the new build could not be executed
		}
	}()

	switch reason {
	case restartRunaway:
		errLog.Printf("server restarted in place; serving %s again", funcContext.FunctionName)
	case restartDebug:
		serveDebuggee()
		errLog.Printf("Go runtime serving %s under Delve (generation %d, no timeout)", funcContext.FunctionName, generation)
		controlLine(map[string]any{"event": "ready", "generation": generation})
	case restartReload:
		errLog.Printf("Go runtime reloaded: serving %s (generation %d)", funcContext.FunctionName, generation)
		controlLine(map[string]any{"event": "ready", "generation": generation})
	default:
		errLog.Printf("Go runtime serving %s on %s (timeout %s)", funcContext.FunctionName, listener.Addr(), funcTimeout)
		controlLine(map[string]any{"event": "ready", "generation": 0})
	}
	served = make(chan struct{})
	serve()
	select {} // Shutdown in progress: restartInPlace or the signal handler ends the process
}

// ---------------------------------------------------------------- debugging (Delve)

// Debugging under Delve. With KUBELESS_LOCAL_DEBUG_PORT set, the process the engine starts does not
// serve: it stays the engine's process (signals, logs, exit code) and runs the same function built
// with debug info (`debug-build.sh`, written by compile-function.sh) under `dlv exec --headless
// --accept-multiclient` on 127.0.0.1:<port>, which JSON-RPC and DAP clients (VS Code's remote
// attach) can both attach to. It holds the function's listening socket and hands it to each debuggee
// (fd 3, as a restart in place does), so calls wait in the backlog while a save rebuilds: SIGHUP
// builds the new code with debug info, stops Delve (and its debuggee) and starts it again on the same
// port. Without the variable none of this runs.

const (
	debugPortEnv = "KUBELESS_LOCAL_DEBUG_PORT"
	// where Delve listens: 0.0.0.0 in a bridge-mode container (emulator/docker/debugger.py), else 127.0.0.1
	debugHostEnv = "KUBELESS_LOCAL_DEBUG_HOST"
	dlvEnv       = "KUBELESS_LOCAL_DLV"       // the Delve binary (the engine builds it once, see emulator/delve.py)
	restartDebug = "debug"                    // restartEnv of a debuggee: serve the handed-over socket
	debugTimeout = 100 * 365 * 24 * time.Hour // FUNC_TIMEOUT of a debuggee: never
	// How long the debuggee may take to finish its calls, then Delve to stop, before they are killed
	// (the engine kills them all 3 s after SIGTERM anyway).
	debuggeeStopGrace = 2 * time.Second
	dlvStopGrace      = 5 * time.Second
)

// debugLauncher is one Delve session at a time and the socket every session serves.
type debugLauncher struct {
	port     string // the debug port
	dlv      string
	link     string // the engine's `build` link: the newest build
	socket   *os.File
	cmd      *exec.Cmd     // Delve
	exited   chan struct{} // closed when Delve has exited
	gone     chan struct{} // closed when its debuggee has exited (Delve stays, for its clients)
	debuggee *atomic.Int64 // the debuggee's pid, once known
}

func runDebugLauncher(port string, listener net.Listener) {
	l := &debugLauncher{port: port, link: filepath.Dir(startPath)}
	l.dlv = os.Getenv(dlvEnv)
	if l.dlv == "" {
		l.dlv, _ = exec.LookPath("dlv")
	}
	if l.dlv == "" || syscall.Access(l.dlv, 1 /* X_OK */) != nil {
		errLog.Printf("cannot debug %s: no Delve (dlv) at %q: set %s or put dlv on PATH", funcContext.FunctionName, l.dlv, dlvEnv)
		os.Exit(1)
	}
	file, err := listener.(*net.TCPListener).File()
	if err != nil {
		errLog.Printf("cannot debug: %v", err)
		os.Exit(1)
	}
	listener.Close() // the duplicate keeps the socket listening for the debuggees
	l.socket = file

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(hups, syscall.SIGHUP)
	if err := l.start(0); err != nil {
		errLog.Printf("cannot debug %s: %v", funcContext.FunctionName, err)
		os.Exit(1)
	}
	for {
		select {
		case <-stop:
			l.stop()
			os.Exit(0)
		case <-l.exited:
			code := l.cmd.ProcessState.ExitCode()
			errLog.Printf("Delve exited (code %d)", code)
			os.Exit(max(code, 1))
		case <-l.gone: // the function ended its server (os.Exit, log.Fatal…): a crash, as without Delve
			errLog.Printf("the server of %s exited under Delve", funcContext.FunctionName)
			l.stop()
			os.Exit(1)
		case <-hups:
			generation++
			if err := l.reload(); err != nil {
				reportLoadFailure(err.Error())
			}
		}
	}
}

// build builds the newest code with debug info and returns the binary. It runs in the build's
// src/ through the `build` link (PWD names the link) and names the function's files as the server
// loads them, KUBELESS_INSTALL_VOLUME/<file> (the install link), whatever the generation: an
// editor's path mapping and its breakpoints hold across saves.
func (l *debugLauncher) build() (string, error) {
	src := filepath.Join(l.link, "src")
	out := filepath.Join(l.link, "server.debug")
	errLog.Printf("building %s with debug info for Delve", funcContext.FunctionName)
	cmd := exec.Command("/bin/sh", filepath.Join(l.link, "debug-build.sh"), out)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "PWD="+src)
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("the debug build failed: %v\n%s", err, output)
	}
	resolved, err := filepath.EvalSymlinks(out) // this build's binary, not whatever the link names later
	if err != nil {
		return "", err
	}
	return resolved, nil
}

// start runs the newest code under a new Delve; the debuggee reports ready itself.
func (l *debugLauncher) start(gen int) error {
	binary, err := l.build()
	if err != nil {
		return err
	}
	return l.startDlv(binary, gen)
}

func (l *debugLauncher) startDlv(binary string, gen int) error {
	host := os.Getenv(debugHostEnv)
	if host == "" {
		host = "127.0.0.1"
	}
	cmd := exec.Command(l.dlv, "exec", "--headless", "--listen="+host+":"+l.port, "--accept-multiclient",
		"--continue", "--api-version=2", binary)
	env := []string{}
	for _, kv := range os.Environ() {
		if len(kv) > len(debugPortEnv) && kv[:len(debugPortEnv)+1] == debugPortEnv+"=" {
			continue // the debuggee serves; it does not launch again
		}
		env = append(env, kv)
	}
	// GO_TELEMETRY_CHILD=2: Delve forks no telemetry sidecar, which would inherit the socket and outlive it.
	cmd.Env = append(env, listenFDEnv+"=3", restartEnv+"="+restartDebug, generationEnv+"="+strconv.Itoa(gen),
		"GO_TELEMETRY_CHILD=2")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{l.socket} // fd 3 in Delve, inherited by the debuggee it starts
	if err := cmd.Start(); err != nil {
		return err
	}
	exited, gone, debuggee := make(chan struct{}), make(chan struct{}), new(atomic.Int64)
	go func() {
		cmd.Wait()
		close(exited)
	}()
	go watchDebuggee(cmd.Process.Pid, exited, gone, debuggee)
	l.cmd, l.exited, l.gone, l.debuggee = cmd, exited, gone, debuggee
	return nil
}

// watchDebuggee finds the process Delve started (its only child) and closes `gone` when it has
// exited, for as long as Delve runs.
func watchDebuggee(dlvPid int, exited <-chan struct{}, gone chan<- struct{}, debuggee *atomic.Int64) {
	for pid := 0; ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return
		default:
		}
		if pid == 0 {
			pid = childOf(dlvPid)
			debuggee.Store(int64(pid))
		} else if !running(pid) {
			close(gone)
			return
		}
	}
}

func childOf(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		if b, err := os.ReadFile(task); err == nil {
			if fields := strings.Fields(string(b)); len(fields) > 0 {
				child, _ := strconv.Atoi(fields[0])
				return child
			}
		}
	}
	return 0
}

// running: the process exists and is not a zombie waiting for Delve to collect it.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	end := strings.LastIndex(s, ")") // the name (in parentheses) may contain anything
	return err == nil && end > 0 && len(s) > end+2 && s[end+2] != 'Z'
}

// reload: the new code with debug info first (a build that fails leaves the old session serving),
// then a new Delve on the same port.
func (l *debugLauncher) reload() error {
	binary, err := l.build()
	if err != nil {
		return err
	}
	l.stop()
	return l.startDlv(binary, generation)
}

// stop ends the Delve session: the debuggee is asked to stop first (SIGTERM: the calls in flight
// finish, unless paused at a breakpoint), then Delve is interrupted, which kills a debuggee still there.
func (l *debugLauncher) stop() {
	if l.cmd == nil {
		return
	}
	if pid := l.debuggee.Load(); pid > 0 {
		errLog.Printf("stopping the server under Delve (its calls in flight finish first)")
		syscall.Kill(int(pid), syscall.SIGTERM)
		select {
		case <-l.gone:
		case <-l.exited:
		case <-time.After(debuggeeStopGrace):
		}
	}
	l.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-l.exited:
	case <-time.After(dlvStopGrace):
		l.cmd.Process.Kill() // the debuggee dies with it (parent-death signal, see serveDebuggee)
		<-l.exited
	}
	l.cmd = nil
	l.exited, l.gone = make(chan struct{}), make(chan struct{}) // never closed: no session runs
}

// serveDebuggee prepares a server that Delve started: no timeout (a call paused at a breakpoint is
// not a runaway), and it dies with Delve (a killed Delve leaves no debuggee holding the socket).
func serveDebuggee() {
	funcTimeout = debugTimeout
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0)
}
