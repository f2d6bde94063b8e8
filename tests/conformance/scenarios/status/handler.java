package io.kubeless;

import com.sun.net.httpserver.HttpExchange;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

// Answers through the call's HttpExchange: its return value is then ignored.
public class handler {
    public String handler(Event event, Context context) throws IOException {
        HttpExchange response = event.Extensions.Response;
        byte[] body = "created".getBytes(StandardCharsets.UTF_8);
        response.getResponseHeaders().set("X-Custom", "yes");
        response.sendResponseHeaders(201, body.length);
        OutputStream out = response.getResponseBody();
        out.write(body);
        out.close();
        return null;
    }
}
