package io.kubeless.runtime;

import com.sun.net.httpserver.HttpServer;
import io.kubeless.Context;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The kubeless-local Java runtime server (runtimes/README.md): the Kubeless contract on the JDK's
 * com.sun.net.httpserver. Reads MOD_NAME, FUNC_HANDLER, FUNC_TIMEOUT, FUNC_PORT, FUNC_RUNTIME,
 * FUNC_MEMORY_LIMIT, KUBELESS_LOCAL_BIND (0.0.0.0 in a pod, 127.0.0.1 as a local process) and
 * KUBELESS_LOCAL_CONTROL. A class or method that is not there is a load failure: one line, exit 3.
 * A port it cannot bind: exit 4. SIGTERM: stop accepting, let the calls in flight finish, exit.
 */
public final class Main {
    static final int EXIT_LOAD_FAILED = 3;
    static final int EXIT_CANNOT_LISTEN = 4;

    public static void main(String[] args) {
        String module = env("MOD_NAME", "");
        String handler = env("FUNC_HANDLER", "");
        String timeout = env("FUNC_TIMEOUT", "180");
        boolean control = "1".equals(System.getenv("KUBELESS_LOCAL_CONTROL"));
        double seconds = parseTimeout(timeout);
        showCompileWarnings();
        Function function;
        try {
            Context context = new Context(handler, timeout, env("FUNC_RUNTIME", ""), env("FUNC_MEMORY_LIMIT", "0"));
            function = Function.load(module, handler, context);
        } catch (Function.LoadError e) {
            if (control) { // under kubeless-local the engine shows the error (once); standalone it goes to stderr
                System.out.println("@kubeless-local {\"event\": \"load-failed\", \"generation\": 0, \"error\": "
                    + json(e.getMessage()) + "}");
            } else {
                System.err.println(e.getMessage());
            }
            System.exit(EXIT_LOAD_FAILED);
            return;
        }
        String bind = env("KUBELESS_LOCAL_BIND", "0.0.0.0");
        String port = env("FUNC_PORT", "8080");
        HttpServer server;
        try {
            server = HttpServer.create(new InetSocketAddress(bind, Integer.parseInt(port)), 1024);
        } catch (IOException | RuntimeException e) {
            System.err.println("cannot listen on " + bind + ":" + port + ": " + e.getMessage());
            System.exit(EXIT_CANNOT_LISTEN);
            return;
        }
        ExecutorService connections = Executors.newCachedThreadPool(daemons("http"));
        server.setExecutor(connections);  // unbounded: a slow client holds a thread, never the server
        Calls calls = new Calls(function, new Metrics(), seconds);
        server.createContext("/", calls);
        server.start();
        // SIGTERM: the calls in flight finish (their timeout bounds them), then the server stops at once
        // (HttpServer.stop(delay) of JDK 17 waits the whole delay even when nothing is in flight).
        long drain = (long) (Math.min(seconds + 1, 30) * 1e9);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            calls.drain(System.nanoTime() + drain);
            server.stop(0);
        }, "shutdown"));
        System.out.println("Java runtime serving " + module + "." + handler + " on " + bind + ":" + port);
        if (control) {
            System.out.println("@kubeless-local {\"event\": \"ready\", \"generation\": 0}");
        }
    }

    /** What the compile step had to say (the parity guard's warnings): shown as the server starts. */
    private static void showCompileWarnings() {
        String file = System.getProperty("kubeless.compileWarnings");
        if (file == null) {
            return;
        }
        Path path = Paths.get(file);
        try {
            if (Files.size(path) > 0) {
                System.err.print(new String(Files.readAllBytes(path), StandardCharsets.UTF_8));
            }
        } catch (IOException ignored) {
            // no warnings
        }
    }

    static ThreadFactory daemons(String name) {
        AtomicInteger count = new AtomicInteger();
        return task -> {
            Thread thread = new Thread(task, name + "-" + count.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        };
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    private static double parseTimeout(String value) {
        try {
            double seconds = Double.parseDouble(value.trim());
            return seconds > 0 ? seconds : 180;
        } catch (NumberFormatException e) {
            return 180;
        }
    }

    static String json(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
            }
        }
        return out.append('"').toString();
    }
}
