package io.kubeless;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;

// Appends the body to data.txt (a file of its code) and to notes/log.txt (a folder it makes), in its working
// folder (/kubeless, an emptyDir the pod may write to); returns both.
public class handler {
    public String handler(Event event, Context context) throws IOException {
        Files.createDirectories(Paths.get("notes"));
        for (String path : new String[] {"data.txt", "notes/log.txt"}) {
            Files.write(Paths.get(path), event.Data.getBytes(StandardCharsets.UTF_8),
                StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        }
        String data = new String(Files.readAllBytes(Paths.get("data.txt")), StandardCharsets.UTF_8);
        String log = new String(Files.readAllBytes(Paths.get("notes/log.txt")), StandardCharsets.UTF_8);
        return data.replace("\n", "") + "|" + log;
    }
}
