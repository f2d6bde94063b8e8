package io.kubeless.runtime;

import com.sun.net.httpserver.Headers;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;
import io.kubeless.Event;
import io.kubeless.Extensions;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Every request: /healthz, /metrics, else a call of the function with the Kubeless event. A call runs
 * on a thread of its own, so that one that overruns FUNC_TIMEOUT is answered 408 and stopped while the
 * server goes on serving; an exception answers 500 and is logged with its stack trace.
 */
final class Calls implements HttpHandler {
    private static final long BIG_BODY = 8L << 20;  // after a call with a body this big, memory goes back

    private final Function function;
    private final Metrics metrics;
    private final long timeoutNanos;
    private static final String LOGGED = "kubeless-local.logged";  // an exchange attribute: its access line is out
    private final ExecutorService workers = Executors.newCachedThreadPool(Main.daemons("call"));
    // each call thread's id in the kernel (Linux, else 0): the processes it starts are listed as its children
    private static final ThreadLocal<Long> KERNEL_TID = ThreadLocal.withInitial(Calls::kernelThreadId);
    private final AtomicInteger inFlight = new AtomicInteger();
    // The collection after a big body runs on a thread of its own, a moment after the call: in the handler's
    // own frame an interpreted method still holds the body (its local slot), and the heap kept it.
    private final ScheduledExecutorService collector = Executors.newSingleThreadScheduledExecutor(Main.daemons("gc"));

    Calls(Function function, Metrics metrics, double timeoutSeconds) {
        this.function = function;
        this.metrics = metrics;
        this.timeoutNanos = (long) (timeoutSeconds * 1e9);
    }

    @Override
    public void handle(HttpExchange exchange) {
        int status = 500;
        long bodySize = 0;
        try {
            String path = exchange.getRequestURI().getRawPath();
            if ("/healthz".equals(path)) {
                status = send(exchange, 200, "OK", "text/plain; charset=utf-8");
            } else if ("/metrics".equals(path)) {
                status = send(exchange, 200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
            } else {
                inFlight.incrementAndGet();
                try {
                    byte[] body = exchange.getRequestBody().readAllBytes();
                    bodySize = body.length;
                    status = call(exchange, body);
                } finally {
                    inFlight.decrementAndGet();
                }
            }
        } catch (IOException e) {
            status = 499;  // the client went away
        } finally {
            if (exchange.getAttribute(LOGGED) == null) {
                log(exchange, status);  // a client gone, or the function answered through Extensions.Response
            }
            exchange.close();
            if (bodySize >= BIG_BODY) {
                // with the serial collector and small free ratios, the heap shrinks
                collector.schedule(System::gc, 100, TimeUnit.MILLISECONDS);
            }
        }
    }

    /** Waits until no call is in flight, or the deadline (System.nanoTime) has passed. */
    void drain(long deadline) {
        while (inFlight.get() > 0 && System.nanoTime() < deadline) {
            try {
                Thread.sleep(10);
            } catch (InterruptedException e) {
                return;
            }
        }
    }

    private int call(HttpExchange exchange, byte[] body) throws IOException {
        Headers headers = exchange.getRequestHeaders();
        Event event = new Event(new String(body, StandardCharsets.UTF_8), header(headers, "event-id"),
            header(headers, "event-type"), header(headers, "event-time"), header(headers, "event-namespace"),
            new Extensions(exchange));
        AtomicReference<Thread> runner = new AtomicReference<>();
        AtomicLong runnerTid = new AtomicLong();
        long started = System.nanoTime();
        Future<Object> result = workers.submit(() -> {
            runner.set(Thread.currentThread());
            runnerTid.set(KERNEL_TID.get());
            try {
                return function.call(event);
            } catch (Exception e) {
                throw e;
            } catch (Error e) {
                throw e;
            } catch (Throwable e) {
                throw new Exception(e);
            } finally {
                runner.set(null);
                Thread.interrupted();  // a pool thread goes back clean
            }
        });
        try {
            Object value = result.get(timeoutNanos, TimeUnit.NANOSECONDS);
            metrics.observe(seconds(started), false);
            if (exchange.getResponseCode() != -1) {
                return exchange.getResponseCode();  // the function answered through Extensions.Response
            }
            return send(exchange, 200, value == null ? "" : String.valueOf(value), null);
        } catch (TimeoutException e) {
            metrics.observe(seconds(started), true);
            killStarted(runnerTid.get());  // before the thread goes: a thread that ends hands its children on
            stop(result, runner);
            System.err.println("function " + function.method.getName() + " timed out after "
                + (timeoutNanos / 1e9) + " s: the call is stopped");
            return send(exchange, 408, "Timeout exceeded", "text/plain; charset=utf-8");
        } catch (ExecutionException e) {
            metrics.observe(seconds(started), true);
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            System.err.println("function " + function.method.getName() + " failed:");
            cause.printStackTrace();
            if (exchange.getResponseCode() != -1) {
                return exchange.getResponseCode();
            }
            return send(exchange, 500, "Error: 500 Internal Server Error", "text/plain; charset=utf-8");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return send(exchange, 503, "Server shutting down", "text/plain; charset=utf-8");
        }
    }

    /**
     * Stops a call that overran: interrupted (sleeps and waits end), then stopped where it runs
     * (Thread.stop: JDK 17 and older, which every kubeless-local image and java11 toolchain is). A JVM
     * without Thread.stop that still runs the call a moment later exits, and the engine restarts it.
     */
    @SuppressWarnings({"deprecation", "removal"})
    private static void stop(Future<Object> result, AtomicReference<Thread> runner) {
        result.cancel(true);
        Thread thread = runner.get();
        if (thread == null) {
            return;
        }
        try {
            thread.stop();
        } catch (UnsupportedOperationException e) {
            Main.daemons("reaper").newThread(() -> {
                try {
                    Thread.sleep(2000);
                } catch (InterruptedException ignored) {
                    return;
                }
                if (runner.get() == thread) {
                    System.err.println("a timed-out call could not be stopped (this JVM has no Thread.stop): restarting");
                    Runtime.getRuntime().halt(1);
                }
            }).start();
        }
    }

    private static long kernelThreadId() {
        try {
            return Long.parseLong(Paths.get("/proc/thread-self").toRealPath().getFileName().toString());
        } catch (IOException | RuntimeException e) {
            return 0;
        }
    }

    /**
     * SIGKILLs the processes a timed-out call's thread started (a subprocess, one it waits for, a shell in a
     * session of its own) and theirs: the kernel lists a thread's children apart from the other threads'. Left
     * alone they would run on after the 408.
     */
    private static void killStarted(long tid) {
        if (tid <= 0) {
            return;
        }
        List<ProcessHandle> started = new ArrayList<>();
        for (String pid : children(tid)) {
            ProcessHandle.of(Long.parseLong(pid)).ifPresent(child -> {
                started.add(child);
                child.descendants().forEach(started::add);
            });
        }
        started.forEach(ProcessHandle::destroyForcibly);  // parents first: none starts another meanwhile
    }

    private static String[] children(long tid) {
        try {
            String text = new String(Files.readAllBytes(Paths.get("/proc/self/task/" + tid + "/children")),
                StandardCharsets.US_ASCII).trim();
            return text.isEmpty() ? new String[0] : text.split("\\s+");
        } catch (IOException e) {
            return new String[0];
        }
    }

    private static String header(Headers headers, String name) {
        String value = headers.getFirst(name);
        return value == null ? "" : value;
    }

    private static double seconds(long started) {
        return (System.nanoTime() - started) / 1e9;
    }

    /**
     * Answers; the access line goes out first: once the answer is sent the exchange ends, and the next request on the
     * connection (its function's output) could be written before it, so a call's record would end at another's line.
     */
    private static int send(HttpExchange exchange, int status, String text, String contentType) throws IOException {
        log(exchange, status);
        exchange.setAttribute(LOGGED, Boolean.TRUE);
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        if (contentType != null) {
            exchange.getResponseHeaders().set("Content-Type", contentType);
        }
        boolean noBody = bytes.length == 0 || "HEAD".equals(exchange.getRequestMethod());
        exchange.sendResponseHeaders(status, noBody ? -1 : bytes.length);
        if (!noBody) {
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        }
        return status;
    }

    private static void log(HttpExchange exchange, int status) {
        String agent = exchange.getRequestHeaders().getFirst("User-Agent");
        System.out.println(exchange.getRemoteAddress().getAddress().getHostAddress() + " \""
            + exchange.getRequestMethod() + " " + exchange.getRequestURI() + " " + exchange.getProtocol() + "\" "
            + status + " " + (agent == null ? "-" : agent));
    }
}
