package io.kubeless;

public class handler {
    // What a call may leave running: a shell in a session of its own with a child of its own, and a child the
    // call waits for.
    public String handler(Event event, Context context) throws Exception {
        String seconds = event.Data.trim();
        new ProcessBuilder("setsid", "sh", "-c", "sleep " + seconds + " & wait").start();
        new ProcessBuilder("sleep", seconds).start().waitFor();
        return "done";
    }
}
