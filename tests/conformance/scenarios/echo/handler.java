package io.kubeless;

// Java's event data is the body as a string: JSON is returned as it came.
public class handler {
    public String handler(Event event, Context context) {
        return event.Data;
    }
}
