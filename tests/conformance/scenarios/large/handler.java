package io.kubeless;

import java.nio.charset.StandardCharsets;

public class handler {
    public String handler(Event event, Context context) {
        return String.valueOf(event.Data.getBytes(StandardCharsets.UTF_8).length);
    }
}
