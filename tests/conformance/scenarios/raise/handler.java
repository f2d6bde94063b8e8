package io.kubeless;

public class handler {
    public String handler(Event event, Context context) {
        if ("boom".equals(event.Data)) {
            throw new IllegalStateException("boom");
        }
        return "ok";
    }
}
