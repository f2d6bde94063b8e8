package io.kubeless;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

// `sleep`: a runaway call (30 s); otherwise data.txt beside the handler, read by a relative path.
public class handler {
    public String handler(Event event, Context context) throws IOException, InterruptedException {
        if ("sleep".equals(event.Data)) {
            Thread.sleep(30000);
            return "woke up";
        }
        return new String(Files.readAllBytes(Paths.get("data.txt")), StandardCharsets.UTF_8).trim();
    }
}
