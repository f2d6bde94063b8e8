package io.kubeless;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

// Waits (up to 60 s) until the file named by the body exists, then returns data.txt read by a path
// relative to the working folder: a call still in flight while the code is saved.
public class handler {
    public String handler(Event event, Context context) throws IOException, InterruptedException {
        long deadline = System.currentTimeMillis() + 60000;
        while (System.currentTimeMillis() < deadline && !Files.exists(Paths.get(event.Data))) {
            Thread.sleep(10);
        }
        return new String(Files.readAllBytes(Paths.get("data.txt")), StandardCharsets.UTF_8).trim();
    }
}
