package io.kubeless;

import java.io.IOException;
import java.nio.charset.Charset;
import java.nio.file.Files;
import java.nio.file.Paths;

// The characters of data.txt ("é") read as text in the default charset: 1 in the pod (LANG=C.UTF-8).
public class handler {
    public String handler(Event event, Context context) throws IOException {
        return String.valueOf(new String(Files.readAllBytes(Paths.get("data.txt")), Charset.defaultCharset()).trim().length());
    }
}
