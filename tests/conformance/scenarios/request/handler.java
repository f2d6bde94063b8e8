package io.kubeless;

import com.sun.net.httpserver.HttpExchange;

// The native request object: the call's com.sun.net.httpserver.HttpExchange.
public class handler {
    public String handler(Event event, Context context) {
        HttpExchange request = event.Extensions.Request;
        String q = "";
        String query = request.getRequestURI().getQuery();
        for (String pair : query == null ? new String[0] : query.split("&")) {
            if (pair.startsWith("q=")) {
                q = pair.substring(2);
            }
        }
        return request.getRequestHeaders().getFirst("X-Test") + "|" + q;
    }
}
